"""Closed choices (attention, dtype, quantization, chunking, VAD, decoder, weights, task, timestamps, output
format) as ``str`` Enums, and :func:`parse_choice`, which resolves what users type (any case, aliases such as
``fa2``) to them with a did-you-mean for a misspelling."""

from __future__ import annotations

import difflib
import enum
from typing import TypeVar

from .errors import UsageError


class Attention(str, enum.Enum):
    AUTO = "auto"
    EAGER = "eager"
    SDPA = "sdpa"
    SDPA_FLASH = "sdpa:flash"
    SDPA_EFFICIENT = "sdpa:efficient"
    SDPA_MATH = "sdpa:math"
    SDPA_CUDNN = "sdpa:cudnn"
    FLASH_ATTENTION_2 = "flash_attention_2"
    FLEX_ATTENTION = "flex_attention"

    @property
    def hf_name(self) -> str:
        """The ``attn_implementation`` value transformers understands."""
        return "sdpa" if self.value.startswith("sdpa") else self.value

    @property
    def sdpa_backend(self) -> str | None:
        """The pinned PyTorch SDPA backend (``flash``, ``math`` …), or None when PyTorch chooses."""
        return self.value.split(":", 1)[1] if ":" in self.value else None


class DType(str, enum.Enum):
    AUTO = "auto"
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"


class Quantization(str, enum.Enum):
    AUTO = "auto"
    NONE = "none"
    INT8 = "int8"
    INT4 = "int4"


class Chunking(str, enum.Enum):
    BATCHED = "batched"  # overlapping windows decoded in batches, merged at the seams
    SEQUENTIAL = "sequential"  # one window at a time, each starting where the last complete segment ended
    VAD = "vad"  # speech regions merged into windows cut at pauses (WhisperX's cut & merge); needs a VAD


class Vad(str, enum.Enum):
    NONE = "none"
    SKIP = "skip"  # Silero VAD 6, skipping only long stretches that are surely not speech (the default)
    SILERO = "silero"  # Silero VAD 6's speech regions only (faster-whisper's vad_filter)


class Decoder(str, enum.Enum):
    AUTO = "auto"  # whisperctl's lean loop on the CPU (eager/sdpa), transformers' generate() elsewhere
    LEAN = "lean"  # whisperctl's lean loop on any device (the decoder's attention eager or sdpa; the encoder's as chosen)
    GENERATE = "generate"  # always transformers' generate()


class Weights(str, enum.Enum):
    PRETRAINED = "pretrained"  # the checkpoint's trained weights
    RANDOM = "random"  # the architecture with random weights: no download, text meaningless (speed runs)


class Task(str, enum.Enum):
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"


class Timestamps(str, enum.Enum):
    NONE = "none"
    SEGMENT = "segment"
    WORD = "word"


class OutputFormat(str, enum.Enum):
    TXT = "txt"
    SRT = "srt"
    VTT = "vtt"
    TSV = "tsv"
    JSON = "json"
    ALL = "all"


# Spellings people actually type. Keys are compared after lower-casing.
_ALIASES: dict[type[enum.Enum], dict[str, str]] = {
    Attention: {
        "fa2": "flash_attention_2",
        "flash_attn_2": "flash_attention_2",
        "flash-attn-2": "flash_attention_2",
        "flash_attn2": "flash_attention_2",
        "flash-attention-2": "flash_attention_2",
        "flash_attention2": "flash_attention_2",
        "flashattention2": "flash_attention_2",
        "flex": "flex_attention",
        "flex-attention": "flex_attention",
        "sdpa:mem_efficient": "sdpa:efficient",
        "sdpa:mem-efficient": "sdpa:efficient",
        "sdpa:memory_efficient": "sdpa:efficient",
        "sdpa:flash_attention": "sdpa:flash",
        "sdpa:cudnn_attention": "sdpa:cudnn",
    },
    DType: {
        "float32": "fp32",
        "f32": "fp32",
        "float16": "fp16",
        "half": "fp16",
        "f16": "fp16",
        "bfloat16": "bf16",
    },
    Quantization: {"no": "none", "off": "none", "8bit": "int8", "4bit": "int4"},
    Decoder: {"transformers": "generate", "hf": "generate"},
    Weights: {"real": "pretrained", "trained": "pretrained"},
    Timestamps: {"words": "word", "segments": "segment", "false": "none", "off": "none"},
}

E = TypeVar("E", bound=enum.Enum)


def parse_choice(enum_type: type[E], value: str | E, option: str) -> E:
    """Resolve a user spelling (case-insensitive, aliases included) to a member of ``enum_type``.

    An unknown name is a :class:`UsageError` that lists the valid names and suggests the closest one.
    """
    if isinstance(value, enum_type):
        return value
    key = str(value).strip().lower()
    key = _ALIASES.get(enum_type, {}).get(key, key)
    for member in enum_type:
        if member.value == key:
            return member
    valid = [m.value for m in enum_type]
    close = difflib.get_close_matches(key, valid + list(_ALIASES.get(enum_type, {})), n=1, cutoff=0.5)
    hint = ""
    if close:
        target = _ALIASES.get(enum_type, {}).get(close[0], close[0])
        hint = f" Did you mean '{target}'?"
    raise UsageError(f"{option}: unknown value '{value}'. Valid: {', '.join(valid)}.{hint}")
