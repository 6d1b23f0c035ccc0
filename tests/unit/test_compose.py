"""The production compose stack, checked by parsing (this machine has no Docker engine).

compose/docker-compose.yml must give every service an image or a build, a health check
to every long-running one, the documented ports, a scalable inference worker, no
built-in credentials, and only variables that compose/.env.example defines; nginx.conf
must route / to the dashboard (websockets included) and /api to the operations API.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from smap_bench.config import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
ENV_EXAMPLE = COMPOSE_DIR / ".env.example"
NGINX_CONF = COMPOSE_DIR / "nginx.conf"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"
DOCKERIGNORE = COMPOSE_DIR / "Dockerfile.dockerignore"

#: Services that run once and exit: exempt from health checks, and never restarted.
ONE_SHOT = {"kafka-init", "db-migrate", "cli"}

#: Container ports each service must offer (ARCHITECTURE.md, "Local stack"; nginx :80).
DOCUMENTED_PORTS = {
    "nginx": {80},
    "triton": {8000, 8001, 8002},
    "victoriametrics": {8428},
    "kafka": {9092},
    "rabbitmq": {5672},
    "postgres": {5432},
    "api": {8080},
    "dashboard": {5006},
}

#: Pipeline service -> the module its command runs.
PIPELINE_MODULES = {
    "simulator": "pipeline.simulator",
    "router": "pipeline.router",
    "scheduler": "pipeline.scheduler",
    "inference-worker": "pipeline.worker",
    "writer": "pipeline.writer",
    "events": "pipeline.events",
    "api": "pipeline.api",
    "dashboard": "apps/dashboard.py",
}

#: SMAP_* variables the compose file sets for settings fields being added to Settings for
#: remote hosts (the compose network); drop a name here once Settings has its field.
AWAITING_SETTINGS = {"SMAP_BIND_HOST", "SMAP_API_URL", "SMAP_API_TOKEN"}

#: Bind-mount sources that only exist once the project has run (`smap-bench train`
#: writes the model repository; the dataset directory comes from .env).
MADE_AT_RUN_TIME = {"../triton-repository", "../triton-repository/onnx"}


# --- parsing helpers -------------------------------------------------------------------


def container_ports(service: dict[str, Any]) -> set[int]:
    """Every container-side port a service exposes on the network or publishes."""
    ports: set[int] = set()
    for entry in list(service.get("expose") or []) + list(service.get("ports") or []):
        if isinstance(entry, dict):
            ports.add(int(entry["target"]))
            continue
        target = str(entry).split("/")[0].rsplit(":", 1)[-1]
        first, _, last = target.partition("-")
        ports.update(range(int(first), int(last or first) + 1))
    return ports


def published_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    """(host address, host port) of each `ports` entry bound to a fixed host port."""
    published: list[tuple[str, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            if entry.get("published") is not None:
                published.append((str(entry.get("host_ip", "")), int(entry["published"])))
            continue
        parts = str(entry).split("/")[0].split(":")
        if len(parts) == 2:
            published.append(("", int(parts[0])))
        elif len(parts) == 3:
            published.append((parts[0], int(parts[1])))
    return published


def interpolated_names(text: str) -> set[str]:
    """Variables compose substitutes: ${NAME}, ${NAME:-default}, $NAME; not $$NAME."""
    text = text.replace("$$", "")
    braced = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
    bare = re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text)
    return set(braced) | set(bare)


def env_file_values(text: str) -> dict[str, str]:
    """KEY=VALUE lines of a compose env file (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"not a KEY=VALUE line: {line!r}"
        values[key.strip()] = value.strip()
    return values


def nginx_locations(conf: str) -> dict[str, str]:
    """{location path: its body with `set` variables resolved in proxy_pass}."""
    conf = "\n".join(line.split("#", 1)[0] for line in conf.splitlines())
    variables = dict(re.findall(r"\bset\s+\$(\w+)\s+([^;\s]+)\s*;", conf))
    locations: dict[str, str] = {}
    for path, body in re.findall(r"\blocation\s+(?:[=~^*]+\s+)?(\S+)\s*\{([^{}]*)\}", conf):
        locations[path] = re.sub(r"\$(\w+)", lambda m: variables.get(m.group(1), m.group(0)), body)
    return locations


def proxy_target(body: str) -> tuple[str, int] | None:
    """(host, port) a location's proxy_pass sends to, or None without proxy_pass."""
    match = re.search(r"\bproxy_pass\s+([^;\s]+)\s*;", body)
    if match is None:
        return None
    url = urlsplit(match.group(1))
    return url.hostname or "", url.port or 80


def _command_text(service: dict[str, Any]) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else str(command)


# --- the helpers on hand-made cases ------------------------------------------------------


def test_container_and_published_ports_read_every_syntax() -> None:
    service = {
        "expose": ["9092", 9093],
        "ports": [
            "127.0.0.1:8000:8000",
            "80:80/tcp",
            "8001",
            "7000-7002",
            {"target": 5006, "published": 15006, "host_ip": "127.0.0.1"},
        ],
    }
    assert container_ports(service) == {9092, 9093, 8000, 80, 8001, 7000, 7001, 7002, 5006}
    assert published_ports(service) == [("127.0.0.1", 8000), ("", 80), ("127.0.0.1", 15006)]
    assert published_ports({"ports": ["8001"]}) == []


def test_interpolated_names_skip_escaped_dollars() -> None:
    text = 'a: ${A}\nb: "${B:-x} $C"\nc: $$HOSTNAME ${D:?set D}\nd: $$$$E'
    assert interpolated_names(text) == {"A", "B", "C", "D"}


def test_nginx_locations_resolve_set_variables() -> None:
    conf = """
    server {
        set $up app:9000;   # the app
        location / { proxy_pass http://$up; }
        location = /healthz { return 200; }
    }
    """
    locations = nginx_locations(conf)
    assert set(locations) == {"/", "/healthz"}
    assert proxy_target(locations["/"]) == ("app", 9000)
    assert proxy_target(locations["/healthz"]) is None


# --- the real files ----------------------------------------------------------------------

COMPOSE_TEXT = COMPOSE_FILE.read_text(encoding="utf-8")
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
LONG_RUNNING = sorted(set(SERVICES) - ONE_SHOT)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), f"{name}: no image and no build"


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck") or {}
    test = check.get("test")
    assert test and not check.get("disable"), f"{name}: no health check"
    assert test != ["NONE"], f"{name}: health check disabled"
    assert SERVICES[name].get("restart") in {"always", "unless-stopped"}, (
        f"{name}: a long-running service needs a restart policy"
    )


@pytest.mark.parametrize("name", sorted(ONE_SHOT))
def test_one_shot_services_exist_and_never_restart(name: str) -> None:
    assert name in SERVICES, f"ONE_SHOT names {name}, which compose no longer defines"
    assert SERVICES[name].get("restart") == "no", f"{name}: a one-shot job must not restart"


@pytest.mark.parametrize(("name", "ports"), sorted(DOCUMENTED_PORTS.items()))
def test_documented_ports(name: str, ports: set[int]) -> None:
    assert name in SERVICES, f"no service {name}"
    missing = ports - container_ports(SERVICES[name])
    assert not missing, f"{name} neither exposes nor publishes {sorted(missing)}"


def test_documented_ports_match_the_settings_defaults() -> None:
    fields = Settings.model_fields
    assert {
        fields["triton_http_port"].default,
        fields["triton_grpc_port"].default,
        fields["triton_metrics_port"].default,
    } == DOCUMENTED_PORTS["triton"]
    assert {fields["api_port"].default} == DOCUMENTED_PORTS["api"]
    assert {fields["panel_port"].default} == DOCUMENTED_PORTS["dashboard"]
    assert {urlsplit(fields["victoria_url"].default).port} == DOCUMENTED_PORTS["victoriametrics"]


def test_only_nginx_is_published_beyond_the_host() -> None:
    assert ("", 80) in published_ports(SERVICES["nginx"]), "nginx must publish 80:80"
    for name, service in SERVICES.items():
        for address, port in published_ports(service):
            if name != "nginx":
                assert address == "127.0.0.1", (
                    f"{name} publishes {port} on every interface; bind it to 127.0.0.1"
                )


def test_inference_worker_scales() -> None:
    worker = SERVICES["inference-worker"]
    assert "container_name" not in worker, "a container_name forbids --scale"
    assert "hostname" not in worker, "a fixed hostname gives every copy one Celery node name"
    assert not worker.get("ports"), "a published port forbids --scale"


@pytest.mark.parametrize(("name", "module"), sorted(PIPELINE_MODULES.items()))
def test_pipeline_services_run_from_the_app_image(name: str, module: str) -> None:
    service = SERVICES[name]
    build = service.get("build") or {}
    assert build.get("dockerfile") == "compose/Dockerfile", f"{name}: not the app image"
    assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert module in _command_text(service), f"{name}: command does not run {module}"
    assert service.get("depends_on"), f"{name}: starts before the services it needs"


def test_the_schema_is_migrated_before_the_services_that_read_it() -> None:
    # PostgreSQL runs compose/sql only on an empty volume; an older volume needs migrate
    assert _command_text(SERVICES["db-migrate"]) == "smap-bench db migrate"
    for name in ("events", "api"):
        condition = SERVICES[name]["depends_on"]["db-migrate"]["condition"]
        assert condition == "service_completed_successfully", name


def test_topics_come_from_the_project_and_the_broker_creates_none() -> None:
    assert _command_text(SERVICES["kafka-init"]) == "smap-bench topics create"
    kafka_env = SERVICES["kafka"]["environment"]
    assert str(kafka_env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"]).lower() == "false"
    assert set(kafka_env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}


@pytest.mark.parametrize("path", [COMPOSE_FILE, ENV_EXAMPLE, NGINX_CONF, DOCKERFILE])
def test_no_guest_credentials(path: Path) -> None:
    assert "guest" not in path.read_text(encoding="utf-8").lower(), (
        f"{path.name} mentions guest: RabbitMQ's built-in account must not be used"
    )


def test_every_variable_is_defined_in_env_example() -> None:
    defined = env_file_values(ENV_EXAMPLE.read_text(encoding="utf-8"))
    missing = interpolated_names(COMPOSE_TEXT) - defined.keys()
    assert not missing, f"compose/.env.example lacks {sorted(missing)}"


def test_env_example_holds_placeholders_not_secrets() -> None:
    values = env_file_values(ENV_EXAMPLE.read_text(encoding="utf-8"))
    secrets = {k: v for k, v in values.items() if re.search(r"PASSWORD|TOKEN|SECRET", k)}
    assert {"POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"} <= secrets.keys()
    assert all(value == "change-me" for value in secrets.values()), secrets


def test_smap_variables_name_settings_fields() -> None:
    names = set(env_file_values(ENV_EXAMPLE.read_text(encoding="utf-8")))
    for service in SERVICES.values():
        names |= set(service.get("environment") or {})
    fields = {f"SMAP_{field.upper()}" for field in Settings.model_fields}
    unknown = {n for n in names if n.startswith("SMAP_")} - fields - AWAITING_SETTINGS
    assert not unknown, f"not fields of smap_bench.config.Settings (typo?): {sorted(unknown)}"


def test_app_services_reach_the_others_by_service_name() -> None:
    environment = SERVICES["api"]["environment"]
    addresses = {
        "SMAP_KAFKA_BOOTSTRAP": f"kafka://{environment['SMAP_KAFKA_BOOTSTRAP']}",
        "SMAP_RABBITMQ_URL": environment["SMAP_RABBITMQ_URL"],
        "SMAP_POSTGRES_DSN": environment["SMAP_POSTGRES_DSN"],
        "SMAP_VICTORIA_URL": environment["SMAP_VICTORIA_URL"],
        "SMAP_API_URL": environment["SMAP_API_URL"],
    }
    for variable, url in addresses.items():
        parts = urlsplit(url)
        assert parts.hostname in SERVICES, f"{variable}: {parts.hostname} is not a service"
        assert parts.port in container_ports(SERVICES[parts.hostname]), (
            f"{variable}: {parts.hostname} does not expose {parts.port}"
        )
    assert environment["SMAP_TRITON_HOST"] == "triton"
    assert int(environment["SMAP_TRITON_HTTP_PORT"]) in container_ports(SERVICES["triton"])
    assert environment["SMAP_ENVIRONMENT"] == "production"


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_targets_exist_and_can_satisfy_their_condition(name: str) -> None:
    depends_on = SERVICES[name].get("depends_on") or {}
    if isinstance(depends_on, list):
        depends_on = {target: {"condition": "service_started"} for target in depends_on}
    for target, spec in depends_on.items():
        assert target in SERVICES, f"{name} depends on unknown service {target}"
        condition = spec.get("condition", "service_started")
        if condition == "service_healthy":
            assert SERVICES[target].get("healthcheck"), f"{target} has no health check"
        elif condition == "service_completed_successfully":
            assert target in ONE_SHOT, f"{target} never completes: it is not a one-shot job"


def test_nginx_routes_root_to_the_dashboard_and_api_to_the_api() -> None:
    locations = nginx_locations(NGINX_CONF.read_text(encoding="utf-8"))
    assert "/" in locations, "nginx.conf has no location /"
    assert proxy_target(locations["/"]) == ("dashboard", 5006)
    assert re.search(r"proxy_set_header\s+Upgrade\s+\$http_upgrade", locations["/"])
    assert re.search(r"proxy_set_header\s+Connection\s+", locations["/"])
    api_targets = {
        target
        for path, body in locations.items()
        if path.startswith("/api") and (target := proxy_target(body)) is not None
    }
    assert ("api", 8080) in api_targets, "nginx.conf does not send /api to api:8080"
    for host, port in api_targets | {("dashboard", 5006)}:
        assert port in container_ports(SERVICES[host]), f"{host} does not expose {port}"
    mounts = [str(volume) for volume in SERVICES["nginx"].get("volumes", [])]
    assert any(mount.startswith("./nginx.conf:/etc/nginx/") for mount in mounts)


def test_services_mount_what_the_stack_needs() -> None:
    postgres = [str(v) for v in SERVICES["postgres"]["volumes"]]
    assert "./sql:/docker-entrypoint-initdb.d:ro" in postgres
    triton = SERVICES["triton"]
    assert "../triton-repository/onnx:/models:ro" in triton["volumes"]
    assert "--model-repository=/models" in _command_text(triton)
    devices = triton["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in device.get("capabilities", []) for device in devices)
    offset = Settings.model_fields["victoria_latency_offset"].default
    assert f"--search.latencyOffset={offset}" in _command_text(SERVICES["victoriametrics"])


def test_relative_bind_mounts_exist() -> None:
    for name, service in SERVICES.items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if not source.startswith(".") or source in MADE_AT_RUN_TIME:
                continue
            assert (COMPOSE_DIR / source).exists(), f"{name} mounts missing {source}"


def test_app_image_is_slim_python_311_running_as_a_user() -> None:
    lines = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert [line for line in lines if line.startswith("FROM ")] == ["FROM python:3.11-slim"]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in {"root", "0"}, "the app image must not run as root"
    assert any(re.search(r"pip install .*\s\.$", line) for line in lines), "project not installed"
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert source.rstrip("/") not in ignored, f"{source} is copied but ignored"
