"""The ``whisperctl`` command: a thin Typer layer over the library. One module per command."""

from __future__ import annotations

import os
import sys

import typer
from click import exceptions as click_exceptions

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


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so in-flight writes are rolled back and finished outputs stay."""


_signal_seen: list[str] = []


def _on_sigterm(signum, frame):  # noqa: ARG001
    _signal_seen.append("SIGTERM")
    raise _Terminated()


def _setup_logging(debug: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("whisperctl: %(levelname)s: %(message)s"))
    logger = logging.getLogger("whisperctl")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.WARNING)
    logger.propagate = False


def _interrupted(terminated: bool) -> None:
    print(f"whisperctl: {'terminated' if terminated else 'interrupted'}; finished outputs are complete, "
          "rerun with --skip-existing to continue", file=sys.stderr)
    sys.exit(143 if terminated else 130)


def main() -> None:
    """Entry point: library errors become one line on stderr and an exit code (2 usage, 1 runtime)."""
    import signal

    debug = os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0")
    _setup_logging(debug)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass
    try:
        code = app(standalone_mode=False)
        if code == 130:  # typer turns Ctrl-C (and our SIGTERM) inside a command into exit code 130
            _interrupted(bool(_signal_seen))
        if isinstance(code, int) and code:
            sys.exit(code)
    except WhisperctlError as exc:
        if debug:
            raise
        print(f"whisperctl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(isinstance(exc, _Terminated))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except click_exceptions.Abort as exc:  # click turns Ctrl-C inside a command into Abort
        _interrupted(isinstance(exc.__context__, _Terminated))
    except Exception as exc:  # click usage errors and the unexpected
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if debug:
            raise
        print(f"whisperctl: internal error: {type(exc).__name__}: {exc} (set WHISPERCTL_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)
