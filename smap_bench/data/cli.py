"""`smap-bench data ...` (placeholder until the data module lands)."""

import typer

data_app = typer.Typer(help="Where the SMAP dataset is and what it holds.", no_args_is_help=True)
