"""Engine options shared by every command: each declared once in whisperctl.config (flag, help, type, default),
turned into Typer options here."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..config import EngineConfig, option_fields
from ..errors import UsageError

_DEFAULTS = EngineConfig()

# (config field, flag, type, help) of every option `transcribe` takes, from the one declaration of each
# (whisperctl.config: the option dataclasses' field metadata). Every default is None: "not given", so a --config
# preset can fill it.
ENGINE_OPTIONS: list[tuple[str, str, type, str]] = [
    (f.name, f.metadata["flag"], f.metadata["cli_type"], f.metadata["help"])
    for f in option_fields() if f.metadata["flag"] and "transcribe" in f.metadata["commands"]
]


VERBOSE_HELP = "Log what the engine decides (attention pick, each window's decoding) to stderr."


def verbose_option() -> Any:
    return typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP)


def set_verbosity(verbose: bool, quiet: bool = False) -> None:
    """-v: the ``whisperctl`` logger at DEBUG; -q: warnings and errors only; otherwise INFO. ``WHISPERCTL_DEBUG``
    keeps DEBUG whatever the flags say."""
    if verbose and quiet:
        raise UsageError("--verbose and --quiet contradict each other; pick one.")
    if os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0"):
        return
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.getLogger("whisperctl").setLevel(level)


class StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time: a rich progress display redirects it while it runs and
    prints what arrives above itself, so -v's lines do not tear the bar."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the current sys.stderr wins
        pass


class LogFormatter(logging.Formatter):
    """``whisperctl: message`` for information, ``whisperctl: WARNING: message`` (the level named) otherwise."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return f"whisperctl: {text}" if record.levelno == logging.INFO else f"whisperctl: {record.levelname}: {text}"


def engine_options(fn: Callable | None = None, *, exclude: frozenset[str] = frozenset()) -> Callable:
    """Give ``fn`` (which takes ``**engine``) one Typer option per engine setting not in ``exclude``."""
    if fn is None:
        return lambda f: engine_options(f, exclude=exclude)
    sig = inspect.signature(fn)
    params = [p for p in sig.parameters.values() if p.kind != inspect.Parameter.VAR_KEYWORD]
    for field, flag, typ, help_text in ENGINE_OPTIONS:
        if field in exclude:
            continue
        default = getattr(_DEFAULTS, field)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else getattr(default, "value", default)
        option = typer.Option(None, flag, help=help_text, show_default=f"{shown}" if shown is not None else False)
        params.append(inspect.Parameter(field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=Optional[typ]))
    fn.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    return fn


def engine_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """The engine options the user actually gave."""
    return {k: v for k, v in values.items() if v is not None and k in {f for f, *_ in ENGINE_OPTIONS}}


def check_writable_dir(path: Path, option: str) -> None:
    """Create ``path`` if needed and prove a file can be written there, before any model loads."""
    import tempfile

    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".whisperctl-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there: {exc.strerror or exc}. Choose a writable directory.") from None


def check_output_file(path: Path, option: str) -> None:
    """Prove ``path`` can be written (its directory exists and takes a file; it is not a directory) before a long
    run produces what goes into it: a result checked only at the end is lost with the run."""
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a directory; give a file name.")
    if path.exists() and not path.is_file():
        raise UsageError(f"{option} {path}: exists and is not a regular file (a device or FIFO); give a file name.")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: the directory {parent} does not exist.")
    check_writable_dir(parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file exists and is not writable.")
