"""Engine options shared by every command: declared once, defaults and help taken from EngineConfig."""

from __future__ import annotations

import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..config import EngineConfig
from ..errors import UsageError

_DEFAULTS = EngineConfig()

# (config field, flag, type, help). Every default is None: "not given", so a --config preset can fill it.
ENGINE_OPTIONS: list[tuple[str, str, type, str]] = [
    ("model", "--model", str, "Alias (tiny.en, small, large-v3, distil-large-v3 …), hub id, transformers dir or CTranslate2 dir."),
    ("attention", "--attn", str, "auto | eager | sdpa | sdpa:flash|efficient|math|cudnn | flash_attention_2 (fa2) | flex_attention."),
    ("dtype", "--dtype", str, "auto | fp32 | fp16 | bf16."),
    ("device", "--device", str, "auto | cpu | cuda | cuda:N | mps."),
    ("quantization", "--quantize", str, "auto (int8 on CPU, none on GPU) | none | int8 | int4."),
    ("batch_size", "--batch-size", int, "Windows decoded together, across chunks and files."),
    ("chunking", "--chunking", str, "sequential (default: openai-whisper's seeking, files batched in lock-step) | batched "
     "(overlapping windows, merged at seams) | vad (speech regions merged into windows cut at pauses)."),
    ("vad", "--vad", str, "skip (default: leave out only long stretches that are surely not speech) | silero (decode only "
     "its speech regions; the default with --chunking vad) | none (every sample; the default with --clip-timestamps)."),
    ("vad_threshold", "--vad-threshold", float, "VAD: speech probability that starts a region, in (0, 1)."),
    ("min_silence_ms", "--min-silence-ms", int, "VAD: silence that ends a speech region, in ms."),
    ("speech_pad_ms", "--speech-pad-ms", int, "VAD: audio kept on each side of a speech region, in ms."),
    ("clip_timestamps", "--clip-timestamps", str, "start,end,start,end… seconds of each file to decode (openai-whisper's); "
     "an odd count runs the last clip to the end."),
    ("hallucination_silence_threshold", "--hallucination-silence-threshold", float,
     "With --timestamps word: drop a segment that looks invented when silence longer than this (s) surrounds it."),
    ("chunk_length_s", "--chunk-length", float, "Window length in seconds for batched chunking, [1, 30]."),
    ("section_length_s", "--section-length", float, "Sequential chunking with the VAD: cut a long file at the first "
     "pause after every this many seconds of speech into sections decoded side by side (0: one loop per file)."),
    ("chunk_overlap_s", "--chunk-overlap", float, "Overlap between windows in seconds (default: chunk length / 6)."),
    ("language", "--language", str, "Spoken language (en, de, french …); default: detect (English for .en models)."),
    ("task", "--task", str, "transcribe | translate (to English; multilingual models only)."),
    ("timestamps", "--timestamps", str, "none | segment | word (word adds an eager-attention alignment pass)."),
    ("beam_size", "--beam-size", int, "1 = greedy."),
    ("best_of", "--best-of", int, "Sampled fallback passes: candidates drawn per window, the most probable kept."),
    ("temperature", "--temperature", str, "One value, or a comma list for fallback (e.g. 0,0.2,0.4)."),
    ("compression_ratio_threshold", "--compression-ratio-threshold", float, "Decode again hotter when the text's gzip ratio exceeds this."),
    ("logprob_threshold", "--logprob-threshold", float, "Decode again hotter when the mean token log-probability is below this."),
    ("no_speech_threshold", "--no-speech-threshold", float, "A window is silence when P(no speech) exceeds this and its log-probability is low."),
    ("condition_on_previous_text", "--condition-on-previous-text/--no-condition-on-previous-text", bool,
     "Sequential chunking: prompt each window with the text before it."),
    ("initial_prompt", "--initial-prompt", str, "Text that conditions decoding (names, spelling)."),
    ("seed", "--seed", int, "Seed of the sampled fallback passes (each window its own draw: same input, same text)."),
    ("threads", "--threads", int, "CPU threads for torch."),
    ("max_new_tokens", "--max-new-tokens", int, "Cap on generated tokens per window."),
    ("decoder", "--decoder", str, "auto (whisperctl's lean loop on CPU, generate() elsewhere) | lean (any device) | generate (transformers')."),
    ("allow_pickle", "--allow-pickle", bool, "Load pickle (.bin) checkpoints (weights_only=True). Off: safetensors only."),
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
