"""The ``probekit`` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 bad input (one line on stderr, no traceback); 1 an
internal error. Each command lives in ``probekit/commands/<name>.py`` with a
``register(app)`` function; this module collects them.

Starting stays light: ``probekit --help`` imports neither torch,
TransformerLens nor transformers, and nor does ``probekit CMD --help`` except
where CMD's help lists a registry whose module imports torch (probe, sweep,
patch: tests/probekit/test_cli.py checks both). Command modules import what
they run inside the command's body; such registry choices are filled in only
when that command's help is shown (``probekit/commands/_help.py``).
"""

from __future__ import annotations

import importlib
import logging
import os
import pkgutil
import sys

import typer

try:  # typer >= 0.22 vendors click as typer._click
    from typer._click import exceptions as cx
except ImportError:  # pragma: no cover - older typer on real click
    from click import exceptions as cx

from probekit.errors import ProbekitError

app = typer.Typer(
    name="probekit",
    help="Probing, attention dashboards and circuit localization for transformer language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def _root() -> None:
    """Probing, attention dashboards and circuit localization for transformer language models."""


def _register_commands() -> None:
    """Register every ``probekit/commands/<name>.py`` on ``app`` (once: ``main`` may run many times in a process)."""
    import probekit.commands as commands

    if app.registered_commands:
        return
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"probekit.commands.{info.name}").register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``probekit`` console script; returns the exit code."""
    logging.basicConfig(level=os.environ.get("PROBEKIT_LOG", "WARNING"), format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    try:
        _register_commands()  # inside the try: a command module that fails to import is an internal error too
        app(args=argv, prog_name="probekit", standalone_mode=False)
    except cx.NoArgsIsHelpError as e:
        print(e.ctx.get_help() if e.ctx else "usage: probekit COMMAND [ARGS]")
        return 0
    except typer.Exit as e:
        return e.exit_code
    except BrokenPipeError:  # output piped into `head`
        return 0
    except typer.Abort:
        print("probekit: aborted", file=sys.stderr)
        return 1
    except cx.UsageError as e:  # unknown option, bad value, missing argument
        print(f"probekit: error: {e.format_message()}", file=sys.stderr)
        return 2
    except ProbekitError as e:
        print(f"probekit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # an internal error: short by default, the traceback on request
        if os.environ.get("PROBEKIT_DEBUG"):
            raise
        print(f"probekit: internal error: {type(e).__name__}: {e} (set PROBEKIT_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
