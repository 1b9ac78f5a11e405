"""The ``aimbench`` command line: one thin module per command over the library.

User errors (``UserError``) print one ``error: ...`` line on stderr and exit with code 2;
Ctrl-C during an evaluation exits with 130 and never leaves a partial record.
"""

from __future__ import annotations

import sys

import duckdb
import typer

from aimbench.cli.demo import demo
from aimbench.cli.eval import evaluate
from aimbench.cli.features import features
from aimbench.cli.jobs import jobs
from aimbench.cli.ls import list_cards
from aimbench.cli.pretrain import pretrain
from aimbench.cli.report import export, report
from aimbench.cli.tasks import tasks_app
from aimbench.errors import UserError

app = typer.Typer(
    name="aimbench",
    help="Layer-wise frozen-backbone probing (the AIM paper's protocol), with results in DuckDB.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
)
app.command("ls")(list_cards)
app.command("eval")(evaluate)
app.command("features")(features)
app.command("pretrain")(pretrain)
app.command("report")(report)
app.command("export")(export)
app.command("jobs")(jobs)
app.command("demo")(demo)
app.add_typer(tasks_app, name="tasks")


def main() -> None:
    """Console-script entry point: one clean line for user errors, tracebacks only for bugs."""
    try:
        app()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except duckdb.Error as exc:  # e.g. a record file edited by hand into invalid JSON
        print(f"error: cannot read the run records: {str(exc).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
