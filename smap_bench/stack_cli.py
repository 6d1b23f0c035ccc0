"""`smap-bench up | down | status`: the local stack from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from smap_bench import stack
from smap_bench.config import Settings, get_settings

console = Console(width=None if sys.stdout.isatty() else 150)
JsonPath = Annotated[
    Path | None, typer.Option("--json", help="Also write the result as JSON here ('-': stdout)")
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=1)


def _write_json(path: Path | None, payload: dict) -> None:
    if path is None:
        return
    text = json.dumps(payload, indent=2)
    if str(path) == "-":
        print(text)
    else:
        path.write_text(text + "\n")


def _status_table(statuses: list[stack.ServiceStatus]) -> Table:
    table = Table(title="smap-bench local stack", title_justify="left")
    table.add_column("service")
    table.add_column("url")
    table.add_column("health")
    table.add_column("run by")
    table.add_column("detail", overflow="fold")
    for s in statuses:
        run_by = {True: "smap-bench", False: "already running", None: "-"}[s.managed]
        health = "[green]healthy[/]" if s.healthy else "[red]down[/]"
        table.add_row(s.name, s.url, health, run_by, s.detail)
    return table


def bring_up(
    settings: Settings, pipeline: bool = True, replay: bool = False
) -> list[stack.ServiceStatus]:
    """Start what is missing, wait until healthy, provision; the statuses at the end.

    Two phases: the infrastructure first (then the schema and topics it must hold), the
    pipeline processes second, so that no stage starts before its topics exist. Programs
    already running are left running.
    """
    supervisor = stack.Supervisor(settings)
    running = supervisor.programs()
    decisions = stack.plan(settings, running, pipeline, replay)
    stack.prepare_run_dir(settings, decisions)
    models, changed = stack.build_triton_models(settings)
    infra = {s.name for s in stack.infrastructure_services(settings)}
    for d in decisions:
        if not d.managed:
            name, port = d.service.name, d.service.port
            console.print(f"  [cyan]{name}[/] already listens on {port}: re-used")

    wanted = set(running)  # programs already running stay in the config

    def start(phase: list[stack.Decision]) -> None:
        wanted.update(d.service.name for d in phase)
        programs = {
            d.service.name: d.service.program(settings)
            for d in decisions
            if d.managed and d.service.name in wanted
        }
        conf_path = settings.run_dir / "supervisord.conf"
        conf_path.touch(mode=0o600)  # it holds the API token
        conf_path.write_text(stack.supervisord_conf(settings, programs))
        supervisor.start()
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console
        ) as progress:
            for d in phase:
                task = progress.add_task(f"waiting for {d.service.name}", total=None)
                for _ in stack.wait_healthy(settings, d.service):
                    progress.update(task)
                done = f"[green]{d.service.name} healthy"
                progress.update(task, description=done, total=1, completed=1)

    start([d for d in decisions if d.service.name in infra])
    newly = stack.load_triton_models(settings, models, changed)
    console.print(
        f"  Triton serves {len(models)} model(s) from {settings.model_repository}"
        + (f" ({len(newly)} loaded now)" if newly else "")
    )
    for note in stack.provision(settings):
        console.print(f"  {note}")
    later = [d for d in decisions if d.service.name not in infra]
    if later:
        start(later)
    return stack.status(settings)


def register(app: typer.Typer) -> None:
    """Mount the stack commands on the main CLI."""
    topics_app = typer.Typer(help="Kafka topics of the pipeline.", no_args_is_help=True)
    app.add_typer(topics_app, name="topics")

    @topics_app.command("create")
    def topics_create(
        satellites: Annotated[
            int | None, typer.Option(help="Satellites in the fleet (default: SMAP_SATELLITES)")
        ] = None,
    ) -> None:
        """Create every topic the pipeline uses that does not exist yet (safe to re-run)."""
        settings = get_settings()
        if satellites is not None:
            settings = settings.model_copy(update={"satellites": satellites})
        try:
            console.print(stack.create_topics(settings))
        except Exception as exc:
            raise _fail(f"could not create topics at {settings.kafka_bootstrap}: {exc}") from None

    db_app = typer.Typer(help="The PostgreSQL schema.", no_args_is_help=True)
    app.add_typer(db_app, name="db")

    @db_app.command("migrate")
    def db_migrate() -> None:
        """Create the database if missing and apply the schema migrations not yet applied
        (compose/sql; safe to re-run: what `make up` does, for hosts it does not manage)."""
        from smap_bench import db

        settings = get_settings()
        try:
            created = db.ensure_database(settings.postgres_dsn)
            applied = db.migrate(settings.postgres_dsn)
        except Exception as exc:
            raise _fail(f"could not migrate the database of SMAP_POSTGRES_DSN: {exc}") from None
        console.print(
            f"PostgreSQL: database {'created' if created else 'present'}, "
            f"migrations applied: {', '.join(applied) or 'none (up to date)'}"
        )

    @app.command()
    def up(
        satellites: Annotated[
            int | None, typer.Option(help="Satellites in the fleet (default: SMAP_SATELLITES)")
        ] = None,
        speed: Annotated[
            float | None, typer.Option(help="Replay speed (default: SMAP_REPLAY_SPEED, 1 Hz)")
        ] = None,
        replay: Annotated[
            bool, typer.Option(help="Also start a replay of the fleet's telemetry")
        ] = True,
        pipeline: Annotated[
            bool, typer.Option(help="Start the pipeline processes, not only the services")
        ] = True,
        json_path: JsonPath = None,
    ) -> None:
        """Start every service of the local stack (re-using any already running) and report."""
        settings = get_settings()
        if satellites is not None:
            settings = settings.model_copy(update={"satellites": satellites})
        if speed is not None:
            settings = settings.model_copy(update={"replay_speed": speed})
        try:
            statuses = bring_up(settings, pipeline=pipeline, replay=replay and pipeline)
        except stack.StackError as exc:
            raise _fail(str(exc)) from None
        console.print(_status_table(statuses))
        _write_json(json_path, _status_payload(statuses))
        if not all(s.healthy for s in statuses):
            raise _fail("some services are not healthy (see the table)")
        from smap_bench.api.auth import token_path

        console.print(f"Dashboard: [bold]{settings.dashboard_url}[/]   (stop: make down)")
        console.print(
            f"API: {settings.dashboard_url}api/docs   token for mutating routes: "
            f"{token_path(settings)}"
        )

    @app.command()
    def down() -> None:
        """Stop what `smap-bench up` started, and only that."""
        settings = get_settings()
        if stack.Supervisor(settings).shutdown():
            console.print("stopped the services smap-bench started")
        else:
            console.print("nothing to stop: smap-bench's supervisor is not running")

    @app.command()
    def status(json_path: JsonPath = None) -> None:
        """Every service, its URL, and whether it is healthy (exit 1 if any is not)."""
        settings = get_settings()
        statuses = stack.status(settings)
        if json_path is None or str(json_path) != "-":
            console.print(_status_table(statuses))
        _write_json(json_path, _status_payload(statuses))
        if not all(s.healthy for s in statuses):
            raise typer.Exit(code=1)


def _status_payload(statuses: list[stack.ServiceStatus]) -> dict:
    return {
        "services": {
            s.name: {"healthy": s.healthy, "url": s.url, "managed": s.managed, "detail": s.detail}
            for s in statuses
        }
    }
