"""Health checks of the stack's services: each answers "is it up and doing its job?".

A check returns ``None`` when healthy and raises :class:`Unhealthy` with one line saying
what is wrong. They are cheap (one request, two-second timeouts) so the status command,
the start-up wait and the operations API can call them freely.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx

from smap_bench.config import Settings

TIMEOUT_S = 2.0


class Unhealthy(RuntimeError):
    """A service did not answer its health check."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_http(url: str, expect: str | None = None) -> None:
    try:
        response = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise Unhealthy(f"{url}: {exc.__class__.__name__}: {exc}") from None
    if response.status_code != 200:
        raise Unhealthy(f"{url}: HTTP {response.status_code}")
    if expect is not None and expect not in response.text:
        raise Unhealthy(f"{url}: unexpected answer {response.text[:80]!r}")


def check_kafka(settings: Settings) -> None:
    """A metadata request answered by the broker."""
    from confluent_kafka.admin import AdminClient

    host, port = settings.kafka_host_port
    if not port_open(host, port):
        raise Unhealthy(f"Kafka at {settings.kafka_bootstrap}: nothing listens")
    admin = AdminClient(
        {"bootstrap.servers": settings.kafka_bootstrap, "socket.timeout.ms": 2000, "log_level": 0}
    )
    try:
        metadata = admin.list_topics(timeout=TIMEOUT_S)
    except Exception as exc:
        raise Unhealthy(f"Kafka at {settings.kafka_bootstrap}: {exc}") from None
    if not metadata.brokers:
        raise Unhealthy(f"Kafka at {settings.kafka_bootstrap}: no broker in metadata")


def check_rabbitmq(settings: Settings) -> None:
    """An AMQP connection opened and closed (login included)."""
    from kombu import Connection

    try:
        with Connection(settings.rabbitmq_url, connect_timeout=TIMEOUT_S) as connection:
            connection.ensure_connection(max_retries=1)
    except Exception as exc:
        raise Unhealthy(f"RabbitMQ: {exc}") from None


def check_postgres(settings: Settings) -> None:
    """A connection to the server's maintenance database and ``SELECT 1``."""
    import psycopg

    from smap_bench.db import admin_dsn

    try:
        with psycopg.connect(admin_dsn(settings.postgres_dsn), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise Unhealthy(f"PostgreSQL: {str(exc).strip().splitlines()[0]}") from None


def check_victoria(settings: Settings) -> None:
    check_http(f"{settings.victoria_url}/health", expect="OK")


def check_triton(settings: Settings) -> None:
    """Triton's readiness endpoint (strict: every loaded model ready)."""
    check_http(f"http://{settings.triton_http_url}/v2/health/ready")


def check_nginx(settings: Settings) -> None:
    check_http(f"http://{settings.host}:{settings.nginx_port}/healthz", expect="ok")


HealthCheck = Callable[[Settings], None]
