"""The ``whisperctl`` command: a thin Typer layer over the library. One module per command."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import Any

import typer

from ..version import __version__
from ..errors import WhisperctlError

app = typer.Typer(
    name="whisperctl",
    help="Transcribe, benchmark and diagnose Whisper / Distil-Whisper on transformers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts say "[engine]" and "[bench]" (TOML tables), not rich markup
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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so in-flight writes are rolled back and finished outputs stay."""


class Interrupted(Exception):
    """Ctrl-C or SIGTERM in a command that knows what to do next. An ``Exception``, not a ``KeyboardInterrupt``:
    typer turns the latter into exit code 130 and the message would be lost."""

    def __init__(self, terminated: bool, next_step: str):
        super().__init__(next_step)
        self.terminated, self.next_step = terminated, next_step


from . import bench as _bench, doctor as _doctor, serve as _serve, transcribe as _transcribe  # noqa: E402,F401  (register the commands)

_signal_seen: list[str] = []


def _on_sigterm(signum, frame):  # noqa: ARG001
    _signal_seen.append("SIGTERM")
    raise Terminated()


def _setup_logging(debug: bool) -> None:
    """The library's ``whisperctl`` logger to stderr: INFO (what the user should know, e.g. a one-time model
    conversion) until a command's -v/-q says otherwise; DEBUG with ``WHISPERCTL_DEBUG``."""
    import logging

    from .options import LogFormatter, StderrHandler

    handler = StderrHandler()
    handler.setFormatter(LogFormatter())
    logger = logging.getLogger("whisperctl")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def _interrupted(terminated: bool, next_step: str = "") -> None:
    print(f"whisperctl: {'terminated' if terminated else 'interrupted'}{'; ' + next_step if next_step else ''}",
          file=sys.stderr)
    sys.exit(143 if terminated else 130)


def _click_classes(name: str) -> tuple[type, ...]:
    """``name`` from every click the running typer may use: click itself (typer < 0.25) and the copy typer ≥ 0.25
    vendors as ``typer._click``. Matching only one of them turned every parse error into an "internal error"."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            continue
        if isinstance(cls, type) and cls not in found:
            found.append(cls)
    return tuple(found)


def usage_error_line(exc: BaseException) -> str:
    """A click/typer parse error as one line: what is wrong, and where the help is."""
    message = " ".join(str(exc.format_message() if hasattr(exc, "format_message") else exc).split())
    ctx = getattr(exc, "ctx", None)
    option = getattr(exc, "option_name", None) or ""
    if message and message[-1] not in ".!?":
        message += "."
    if type(exc).__name__ == "NoSuchOption" and option.startswith("-") and not option.startswith("--"):
        # `transcribe -take2.wav`: click reads -t… as short options; say how to pass such a file name
        arg = next((a for a in sys.argv[1:] if a.startswith(option) and len(a) > len(option)), None)
        if arg is not None and ("." in arg or os.path.exists(arg)):
            message += f" A file name that starts with '-'? Write ./{arg} or put it after --."
    if ctx is not None and getattr(ctx, "command_path", None):
        message += f" See '{ctx.command_path} --help'."
    return f"whisperctl: error: {message}"


def run() -> None:
    """The ``whisperctl`` command: :func:`main`, then, once no other thread is working, the interpreter's exit
    handlers (``atexit``: logging, Ray, thread pools) and an immediate exit. What that skips is tearing torch's
    module graph down object by object: 0.3-0.5 s of every command (a whole transcription of the 11 s JFK clip,
    2.6 -> 2.2 s on 2 cores). Nothing of whisperctl's is open by then: outputs are written and closed, journals
    committed, child processes waited for. Embedding code and the tests call :func:`main`, which returns."""
    try:
        main()
        code: Any = 0
    except SystemExit as exc:
        code = exc.code
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        sys.exit(code)  # a thread still works: the interpreter's exit waits for it
    if code is None:
        code = 0
    elif not isinstance(code, int):  # sys.exit("text"): the text on stderr and status 1, as the interpreter does
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that left, or a closed stream: nothing more can reach it
            pass
    os._exit(code)


def main() -> None:
    """Entry point: library errors become one line on stderr and an exit code (2 usage, 1 runtime)."""
    import signal

    debug = os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0")
    _setup_logging(debug)
    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 (b"\xff.wav") is written as \udcff
        try:  # rather than failing the run (stderr is so by default, but not every stderr a caller hands over)
            stream.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
        except (AttributeError, ValueError):
            pass
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): keep the default
        pass
    try:
        try:
            code = app(standalone_mode=False)
        finally:
            sys.stdout.flush()  # here, so a failed write (/dev/full) reaches the handlers below, not interpreter exit
        if code == 130:  # typer turns Ctrl-C (and our SIGTERM) inside a command into exit code 130
            _interrupted(bool(_signal_seen))
        if isinstance(code, int) and code:
            sys.exit(code)
    except SystemExit as exc:
        if isinstance(exc.__context__, BrokenPipeError):  # typer's own EPIPE handler ran first and chose exit 1
            _quiet_stdout()
            sys.exit(141)
        raise
    except WhisperctlError as exc:
        if debug:
            raise
        print(f"whisperctl: error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:
        _interrupted(isinstance(exc, Terminated))
    except Interrupted as exc:
        _interrupted(exc.terminated, exc.next_step)
    except BrokenPipeError:  # `whisperctl transcribe … | head`: the reader left; not an error of ours
        _quiet_stdout()
        sys.exit(141)
    except OSError as exc:
        if debug:
            raise
        if exc.filename is None and exc.errno is not None:  # a failed write to stdout/stderr (e.g. /dev/full)
            _quiet_stdout()
            print(f"whisperctl: error: cannot write the output: {exc.strerror or exc}.", file=sys.stderr)
            sys.exit(1)
        print(f"whisperctl: error: {exc.filename}: {exc.strerror or exc}.", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:  # click usage errors, typer.Exit/Abort, and the unexpected
        if isinstance(exc, _click_classes("Exit") + (typer.Exit,)):
            sys.exit(exc.exit_code)
        if isinstance(exc, _click_classes("Abort") + (typer.Abort,)):  # click turns Ctrl-C into Abort
            _interrupted(isinstance(exc.__context__, Terminated))
        if isinstance(exc, _click_classes("NoArgsIsHelpError")):  # bare `whisperctl`: the help, as a request
            exc.show()
            sys.exit(0)
        if isinstance(exc, _click_classes("UsageError")):
            print(usage_error_line(exc), file=sys.stderr)
            sys.exit(2)
        if isinstance(exc, _click_classes("ClickException")):  # e.g. FileError: a runtime failure
            print(f"whisperctl: error: {' '.join(exc.format_message().split())}", file=sys.stderr)
            sys.exit(1)
        if debug:
            raise
        print(f"whisperctl: internal error: {type(exc).__name__}: {exc} (set WHISPERCTL_DEBUG=1 for a traceback)", file=sys.stderr)
        sys.exit(1)


def _quiet_stdout() -> None:
    """After stdout failed, point it at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
