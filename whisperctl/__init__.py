"""whisperctl: transcribe, benchmark and diagnose Whisper / Distil-Whisper on transformers.

The library comes first; the ``whisperctl`` command is a thin layer over it. Importing this package is
cheap: torch and transformers load only when a model does.
"""

from __future__ import annotations

from .version import __version__

from .config import (
    Attention,
    Chunking,
    DType,
    EngineConfig,
    LoadOptions,
    OutputFormat,
    Quantization,
    RunControl,
    Task,
    Timestamps,
    Weights,
)
from .errors import (
    AudioError,
    ConversionError,
    EligibilityError,
    ModelError,
    ModelNotFoundError,
    OutputError,
    UsageError,
    WhisperctlError,
)

__all__ = [
    "Attention",
    "AudioError",
    "Chunking",
    "ConversionError",
    "DType",
    "EligibilityError",
    "EngineConfig",
    "LoadOptions",
    "ModelError",
    "ModelNotFoundError",
    "OutputError",
    "OutputFormat",
    "Quantization",
    "RunControl",
    "Task",
    "Timestamps",
    "Transcriber",
    "Transcript",
    "UsageError",
    "Weights",
    "WhisperctlError",
    "__version__",
    "transcribe",
]


def __getattr__(name: str):
    # Heavy pieces load on first use, so `import whisperctl` and `whisperctl --help` stay fast.
    if name in ("Transcriber", "transcribe"):
        from . import engine

        return getattr(engine, name)
    if name == "Transcript":
        from .results import Transcript

        return Transcript
    raise AttributeError(f"module 'whisperctl' has no attribute {name!r}")
