"""The ``whisperctl`` command: a thin Typer layer over the library. One module per command."""

from __future__ import annotations

import os
import sys

import typer

from .. import __version__
from ..errors import WhisperctlError

app = typer.Typer(
    name="whisperctl",
    help="Transcribe, benchmark and diagnose Whisper / Distil-Whisper on transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"whisperctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Transcribe, benchmark and diagnose Whisper / Distil-Whisper on transformers."""


from . import bench as _bench, doctor as _doctor, transcribe as _transcribe  # noqa: E402,F401  (register the commands)


def main() -> None:
    """Entry point: library errors become one line on stderr and an exit code (2 usage, 1 runtime)."""
    debug = os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0")
    try:
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except WhisperctlError as exc:
        if debug:
            raise
        print(f"whisperctl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("whisperctl: interrupted", file=sys.stderr)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("whisperctl: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        print(f"whisperctl: internal error: {type(exc).__name__}: {exc} (set WHISPERCTL_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)
