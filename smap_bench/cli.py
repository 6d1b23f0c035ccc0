"""The ``smap-bench`` command: one entry point for the stack, the data, models and benchmarks.

Each command group lives beside the code it drives and is mounted here, so this file
only wires names to functions.
"""

from __future__ import annotations

import typer

from smap_bench.bench.cli import register as register_bench
from smap_bench.data.cli import data_app
from smap_bench.model.cli import evaluate, train
from smap_bench.model.rethreshold import app as rule_app
from smap_bench.stack_cli import register as register_stack

app = typer.Typer(
    name="smap-bench",
    help="Real-time anomaly detection on NASA SMAP telemetry: stack, data, models, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
register_stack(app)
app.add_typer(data_app, name="data")
app.command()(train)
app.command()(evaluate)
app.add_typer(rule_app, name="rule")
register_bench(app)

if __name__ == "__main__":  # pragma: no cover
    app()
