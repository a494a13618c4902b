"""The one ``leadval`` command: each package contributes its subcommands; errors become one line on stderr."""

from __future__ import annotations

import os
import sys

import typer

from features.errors import LeadvalError
from serving.cli import abtest, backtest, data, report, score, serve, train
from serving.cli.console import tell
from serving.cli.lifecycle import models, retrain
from serving.cli.lifecycle import monitor as monitoring

app = typer.Typer(
    name="leadval",
    help="Lead scoring and customer lifetime value for marketing and sales. Add --debug for tracebacks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
train_app = typer.Typer(rich_markup_mode=None, help="Train, evaluate and register a model in MLflow.", no_args_is_help=True)
score_app = typer.Typer(rich_markup_mode=None, help="Score leads or customers and write the scores back.", no_args_is_help=True)
leads_app = typer.Typer(rich_markup_mode=None, help="Lists of leads for sales.", no_args_is_help=True)
backtest_app = typer.Typer(rich_markup_mode=None, help="Backtest a model on past dates against what happened.",
                           no_args_is_help=True)
app.add_typer(train_app, name="train")
app.add_typer(score_app, name="score")
app.add_typer(leads_app, name="leads")
app.add_typer(backtest_app, name="backtest")
app.add_typer(models.app, name="models")
app.add_typer(retrain.app, name="retrain")

app.command("generate")(data.generate)
app.command("import")(data.import_table)


train_app.command("leads")(train.train_leads)
train_app.command("clv")(train.train_clv)
score_app.command("leads")(score.score_leads_command)
score_app.command("customers")(score.score_customers_command)
app.command("serve")(serve.serve)
app.command("report")(report.report)
app.command("segments")(report.segments_export)
leads_app.command("top")(report.leads_top)
app.command("abtest")(abtest.abtest)
backtest_app.command("leads")(backtest.backtest_leads)
app.command("monitor")(monitoring.monitor)


@app.command("demo")
def demo() -> None:
    """Run the end-to-end demo on embedded defaults."""
    from serving.cli.demo import run_demo

    run_demo(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``--debug`` anywhere (or LEADVAL_DEBUG=1) shows tracebacks instead of one-line errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LEADVAL_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    try:
        code = app(args=args, prog_name="leadval", standalone_mode=False)
        if isinstance(code, int) and code:  # a typer.Exit(code): click returns it outside standalone mode
            sys.exit(code)
    except LeadvalError as exc:
        if debug:
            raise
        tell(f"error: {exc}")
        sys.exit(1)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("error: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for people; --debug shows it all
        import click

        if isinstance(exc, (click.ClickException, typer.TyperException)):  # typer's own click, since 0.24
            exc.show()
            sys.exit(getattr(exc, "exit_code", 2))
        if debug:
            raise
        tell(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)")
        sys.exit(1)
