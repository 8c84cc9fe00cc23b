"""The one frozen configuration shared by ``transcribe``, ``bench`` and ``doctor``.

Closed choices are ``str`` Enums; user spellings resolve to them in :func:`parse_choice`. Options come in two
lifetimes: :class:`LoadOptions` (how the model is loaded) and :class:`DecodeOptions` (per call); beside them
:class:`RunControl` says how a run is driven (forced work and out-of-memory handling, for benchmarks) rather than
what it decodes. :class:`EngineConfig` is the three together. All validation that does not need hardware facts lives in their
``__post_init__``, so a bad option fails before any model is loaded. Hardware-dependent checks (can FA2 run
here?) live in :mod:`whisperctl.eligibility`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, TypeVar

from .errors import UsageError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


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


_DEVICE_RE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}$|^[a-z ]{4,}$")

#: Whisper's fixed window: the encoder sees at most 30 s of audio.
MAX_CHUNK_SECONDS = 30.0
MAX_SECTION_SECONDS = 24 * 3600.0  # a day of speech: one section per file in practice
#: Shorter windows carry too little context to decode and multiply the work (0.001 s turned an 11 s clip into
#: 11,000 windows); 1 s is below any useful setting (Distil-Whisper likes 15–25 s).
MIN_CHUNK_SECONDS = 1.0
#: Below this a window rarely holds a whole phrase: words are cut at every seam and decoded without context
#: (issue 27: 39 % WER on a long file at 1 s). Allowed, since a caller may want short windows for latency (and
#: configs that worked keep working), but said as a warning.
SHORT_CHUNK_SECONDS = 5.0
#: Whisper's decoder has 448 positions: no window can produce more tokens.
MAX_DECODER_TOKENS = 448
#: Upper bounds checked before loading. Beyond them memory or time explodes while accuracy does not improve:
#: beam 5 is faster-whisper's and openai-whisper's default, and memory grows with beam × batch (each sequence
#: holds its own attention keys/values: 20 MB for tiny.en in fp32, 267 MB for large-v3 in fp16).
#: The machine's own memory bound (eligibility.memory_problem) is checked on top of these.
MAX_BEAM_SIZE = 32
MAX_BATCH_SIZE = 512
MAX_TEMPERATURES = 16  # fallback schedule length (openai-whisper's has 6)
MAX_VAD_MS = 60_000  # --min-silence-ms, --speech-pad-ms
MAX_HALLUCINATION_SILENCE_S = 3600.0
MAX_CLIPS = 10_000
MAX_PROMPT_CHARS = 10_000  # the prompt is cut to its last 223 tokens anyway

#: (threshold, min_silence_ms, speech_pad_ms) of each VAD. silero: faster-whisper's vad_filter values (its speech
#: regions are decoded, everything else left out). skip, the default: only stretches that are surely not speech are
#: left out — 4 s or more in which no frame of the level-normalised audio reaches 0.15 (regions open at 0.3; they
#: close below threshold - 0.15) — with 1 s kept on either side, so the decoder hears a real 2 s pause where one was
#: skipped; a head or tail shorter than 4 s stays. A recording without such a stretch is decoded exactly as with
#: --vad none (docs/benchmarks.md: what each removes on quiet, phone-band, noisy and two-speaker recordings).
VAD_DEFAULTS = {Vad.SKIP: (0.3, 4000, 1000), Vad.SILERO: (0.5, 2000, 400)}

#: Temperatures tried in order when a decode looks degenerate (openai-whisper's default fallback).
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


#: openai-whisper's decoding-policy defaults (``whisper.transcribe``), used by both chunking modes.
COMPRESSION_RATIO_THRESHOLD = 2.4  # gzip ratio of a window's text above which the decode is a repetition loop
LOGPROB_THRESHOLD = -1.0  # mean token log-probability below which a decode failed
NO_SPEECH_THRESHOLD = 0.6  # P(<|nospeech|>) above which a window whose decode failed is silence


OptionsT = TypeVar("OptionsT", bound="_Options")


class _Options:
    """What the option dataclasses share: a changed copy (validated again) and a JSON-ready view."""

    def replace(self: OptionsT, **changes: Any) -> OptionsT:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclasses.dataclass(frozen=True)
class DecodeOptions(_Options):
    """Per-call decoding options: passed to ``Transcriber.transcribe*()``, defaulted from the EngineConfig.

    One decoding policy for both chunking modes (openai-whisper's): each window is decoded at the first
    temperature; a decode whose text compresses above ``compression_ratio_threshold`` or whose mean token
    log-probability is below ``logprob_threshold`` is decoded again at the next temperature; a window whose
    no-speech probability is above ``no_speech_threshold`` while its log-probability is below
    ``logprob_threshold`` is silence and yields no text (as does a window with no letter or digit).
    """

    batch_size: int = 8  # windows decoded together (across chunks and files)
    chunking: Chunking = Chunking.SEQUENTIAL  # openai-whisper's seeking, inputs in lock-step; or batched overlapping windows
    chunk_length_s: float = 30.0  # window length for batched chunking, [1, 30]
    chunk_overlap_s: float | None = None  # overlap between windows; None = chunk_length_s / 6
    # sequential: a long file's speech is cut at the first pause after every this many seconds into sections whose
    # seeking loops run side by side in the batch (needs the VAD or clip timestamps); 0 = one loop per file
    section_length_s: float = 60.0
    language: str | None = None  # ISO code or name; None = English for .en models, detect otherwise
    task: Task = Task.TRANSCRIBE
    timestamps: Timestamps = Timestamps.SEGMENT  # word timestamps add an eager-attention alignment pass
    beam_size: int = 1  # 1 = greedy
    # sampled fallback passes (temperature > 0) draw this many candidates per window and keep the one with the best
    # log-probability per token (openai-whisper's CLI and faster-whisper default to 5)
    best_of: int = 5
    temperature: tuple[float, ...] = DEFAULT_TEMPERATURES  # tried in turn while a decode fails the thresholds
    compression_ratio_threshold: float | None = COMPRESSION_RATIO_THRESHOLD  # None: no repetition check
    logprob_threshold: float | None = LOGPROB_THRESHOLD  # None: no log-probability check
    no_speech_threshold: float | None = NO_SPEECH_THRESHOLD  # None: never call a window silence
    condition_on_previous_text: bool = True  # sequential: prompt each window with the text before it
    initial_prompt: str | None = None  # text conditioning the first window (names, spelling)
    seed: int = 0  # sampled fallback passes: each window draws from its own generator, seeded by this and its audio
    max_new_tokens: int | None = None  # cap per window; None = model maximum
    # Voice activity detection: None = silero (none with clip timestamps): non-speech is removed before decoding,
    # times mapped back to the original audio (vad_in_effect).
    vad: Vad | None = None
    # None: the VAD's own value (vad_params: skip 0.3 / 4000 / 1000, silero 0.5 / 2000 / 400)
    vad_threshold: float | None = None  # speech probability that starts a region, in (0, 1)
    min_silence_ms: int | None = None  # silence that ends a region (skip: the shortest stretch skipped)
    speech_pad_ms: int | None = None  # audio kept on each side of a region
    # openai-whisper's --clip_timestamps: (start, end, start, end …) seconds of each file to decode, ascending;
    # an odd count leaves the last clip open to the end of the file. None: the whole file.
    clip_timestamps: tuple[float, ...] | None = None
    # openai-whisper's: drop a segment that looks invented (improbable, too short or long words) when silence of
    # more than this many seconds surrounds it. Needs word timestamps. None: off.
    hallucination_silence_threshold: float | None = None

    def __post_init__(self) -> None:
        self._check_vad()
        self._check_output_shape()
        self._check_sizes()
        self._check_window_length()
        self._check_temperatures()
        self._check_thresholds()
        self._check_prompt()
        self._check_language()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen dataclass: normalising in __post_init__

    def _check_vad(self) -> None:
        self._set("chunking", parse_choice(Chunking, self.chunking, "--chunking"))
        if self.vad is not None:
            self._set("vad", parse_choice(Vad, self.vad, "--vad"))
        if self.vad == Vad.NONE and self.chunking == Chunking.VAD:
            raise UsageError("--chunking vad: cuts windows at the pauses a VAD finds; drop --vad none (or use --vad silero).")
        if self.vad_threshold is not None:
            threshold = _require_float(self.vad_threshold, "--vad-threshold")
            if not 0.0 < threshold < 1.0:
                raise UsageError(f"--vad-threshold: {threshold:g} is a speech probability; give a value in (0, 1), e.g. 0.5.")
            self._set("vad_threshold", threshold)
        if self.min_silence_ms is not None:
            _require_int(self.min_silence_ms, "--min-silence-ms", minimum=0, maximum=MAX_VAD_MS,
                         why="a pause that long is never inside speech")
        if self.speech_pad_ms is not None:
            _require_int(self.speech_pad_ms, "--speech-pad-ms", minimum=0, maximum=MAX_VAD_MS,
                         why="more padding than that only decodes silence")

    def _check_output_shape(self) -> None:
        """Task, timestamps, the clips to decode and the hallucination filter (which needs word timestamps)."""
        self._set("task", parse_choice(Task, self.task, "--task"))
        self._set("timestamps", parse_choice(Timestamps, self.timestamps, "--timestamps"))
        if self.clip_timestamps is not None:
            self._set("clip_timestamps", _clip_timestamps(self.clip_timestamps))
            if self.vad_in_effect != Vad.NONE or self.chunking == Chunking.VAD:
                flag = "--chunking vad" if self.chunking == Chunking.VAD else "--vad silero"
                raise UsageError(f"--clip-timestamps: cannot be combined with {flag}: the clips already say which audio "
                                 "to decode. Drop one of them.")
        if self.hallucination_silence_threshold is not None:
            silence = _require_float(self.hallucination_silence_threshold, "--hallucination-silence-threshold")
            if not 0.0 < silence <= MAX_HALLUCINATION_SILENCE_S:
                raise UsageError(f"--hallucination-silence-threshold: {silence:g} s; give seconds of silence in "
                                 f"(0, {MAX_HALLUCINATION_SILENCE_S:g}], e.g. 2.")
            if self.timestamps != Timestamps.WORD:
                raise UsageError("--hallucination-silence-threshold: judges segments by their words' timing and "
                                 "probability; add --timestamps word.")
            self._set("hallucination_silence_threshold", silence)

    def _check_sizes(self) -> None:
        _require_int(self.batch_size, "--batch-size", minimum=1, maximum=MAX_BATCH_SIZE)
        _require_int(self.beam_size, "--beam-size", minimum=1, maximum=MAX_BEAM_SIZE,
                     why="larger beams multiply memory without improving accuracy; 5 is the usual choice")
        _require_int(self.best_of, "--best-of", minimum=1, maximum=MAX_BEAM_SIZE,
                     why="each candidate is a whole sampled decode of the window; 5 is the usual choice")
        _require_token_count(self.max_new_tokens, "--max-new-tokens")

    def _check_window_length(self) -> None:
        chunk = _require_float(self.chunk_length_s, "--chunk-length")
        if not MIN_CHUNK_SECONDS <= chunk <= MAX_CHUNK_SECONDS:
            raise UsageError(f"--chunk-length: {chunk:g} s is outside [{MIN_CHUNK_SECONDS:g}, {MAX_CHUNK_SECONDS:g}]. "
                             "Whisper windows are at most 30 s; shorter than 1 s leaves nothing to decode.")
        section = _require_float(self.section_length_s, "--section-length")
        if not 0.0 <= section <= MAX_SECTION_SECONDS:
            raise UsageError(f"--section-length: {section:g} s; give seconds of speech per section in [0, "
                             f"{MAX_SECTION_SECONDS:g}] (0: one seeking loop per file), e.g. 60.")
        self._set("section_length_s", section)
        if self.chunk_overlap_s is not None:
            overlap = _require_float(self.chunk_overlap_s, "--chunk-overlap")
            if not 0 <= overlap < chunk / 2:
                raise UsageError(
                    f"--chunk-overlap: {overlap:g} s must be ≥ 0 and less than half the chunk length ({chunk:g} s)."
                )

    def _check_temperatures(self) -> None:
        temps = self.temperature
        if isinstance(temps, (int, float)):
            temps = (temps,)
        elif isinstance(temps, str):
            temps = tuple(t for t in temps.split(",") if t.strip())
        if not isinstance(temps, (tuple, list)) or len(temps) > MAX_TEMPERATURES:
            raise UsageError(f"--temperature: give 1 to {MAX_TEMPERATURES} values in [0, 1], e.g. 0 or 0,0.2,0.4.")
        temps = tuple(_require_float(t, "--temperature") for t in temps)
        if not temps or any(not 0.0 <= t <= 1.0 for t in temps):
            raise UsageError("--temperature: give one or more values in [0, 1], e.g. 0 or 0,0.2,0.4.")
        self._set("temperature", temps)

    def _check_thresholds(self) -> None:
        """The fallback thresholds, the seed of the sampled passes and conditioning on previous text."""
        for name, flag in (("compression_ratio_threshold", "--compression-ratio-threshold"),
                           ("logprob_threshold", "--logprob-threshold"), ("no_speech_threshold", "--no-speech-threshold")):
            value = getattr(self, name)
            if value is not None:
                self._set(name, _require_float(value, flag))
        self._set("seed", _require_int(self.seed, "--seed", minimum=0, maximum=2**63 - 1))
        if self.no_speech_threshold is not None and not 0.0 <= self.no_speech_threshold <= 1.0:
            raise UsageError(f"--no-speech-threshold: {self.no_speech_threshold:g} is a probability; give a value in [0, 1].")
        if self.compression_ratio_threshold is not None and self.compression_ratio_threshold <= 0:
            raise UsageError("--compression-ratio-threshold: must be > 0 (openai-whisper's default is 2.4).")
        if self.logprob_threshold is not None and self.logprob_threshold > 0:
            raise UsageError("--logprob-threshold: log-probabilities are ≤ 0 (openai-whisper's default is -1.0).")
        _require_bool(self.condition_on_previous_text, "--condition-on-previous-text")

    def _check_prompt(self) -> None:
        if self.initial_prompt is None:
            return
        if not isinstance(self.initial_prompt, str):
            raise UsageError(f"--initial-prompt: must be text, got {self.initial_prompt!r}.")
        try:
            self.initial_prompt.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError("--initial-prompt: not valid UTF-8 text (check the shell's locale).") from None
        if len(self.initial_prompt) > MAX_PROMPT_CHARS:
            raise UsageError(f"--initial-prompt: {len(self.initial_prompt)} characters; at most {MAX_PROMPT_CHARS} "
                             "(Whisper keeps only the last 223 tokens of a prompt).")

    def _check_language(self) -> None:
        if self.language is None:
            return
        if not isinstance(self.language, str):
            raise UsageError(f"--language: must be a language code or name, got {self.language!r}.")
        lang = self.language.strip().lower()
        if lang in ("", "auto"):
            lang = None
        elif not _LANGUAGE_RE.match(lang):
            raise UsageError(f"--language: '{self.language}' is not a language code or name (e.g. en, de, french).")
        self._set("language", lang)

    @property
    def vad_in_effect(self) -> Vad:
        """The VAD that runs: ``vad`` when given; else skip, which leaves out only long stretches that are surely
        not speech (silero's speech regions cost words on quiet, band-limited and conversational recordings:
        docs/benchmarks.md); silero with ``--chunking vad`` (its windows are merged speech regions); none with
        ``--clip-timestamps`` (the clips already say what to decode)."""
        if self.vad is not None:
            return self.vad
        if self.clip_timestamps is not None:
            return Vad.NONE
        return Vad.SILERO if self.chunking == Chunking.VAD else Vad.SKIP

    @property
    def vad_params(self) -> tuple[float, int, int]:
        """(threshold, min_silence_ms, speech_pad_ms) of the VAD in effect: the flags where given, else its own."""
        own = VAD_DEFAULTS[Vad.SKIP if self.vad_in_effect == Vad.SKIP else Vad.SILERO]
        given = (self.vad_threshold, self.min_silence_ms, self.speech_pad_ms)
        return tuple(o if g is None else g for g, o in zip(given, own))  # type: ignore[return-value]

    @property
    def cuts_audio(self) -> bool:
        """Whether only regions of each file are decoded (a VAD's speech, or the clips), times mapped back."""
        return self.vad_in_effect != Vad.NONE or self.clip_timestamps is not None

    @property
    def clips(self) -> list[tuple[float, float]]:
        """``clip_timestamps`` as (start, end) pairs; the last end is infinite when the count is odd."""
        values = list(self.clip_timestamps or ())
        if len(values) % 2:
            values.append(float("inf"))
        return list(zip(values[::2], values[1::2]))

    @property
    def overlap_s(self) -> float:
        """Overlap between consecutive batched windows, in seconds."""
        return self.chunk_length_s / 6 if self.chunk_overlap_s is None else float(self.chunk_overlap_s)


@dataclasses.dataclass(frozen=True)
class LoadOptions(_Options):
    """How the model is loaded: fixed for a loaded model's life (openai-whisper's ``load_model`` arguments)."""

    model: str = "tiny.en"  # alias, hub repo id, transformers dir or CTranslate2 dir; tiny.en is bundled
    attention: Attention = Attention.AUTO  # attention kernel; auto picks fa2 > sdpa > eager by eligibility
    dtype: DType = DType.AUTO  # auto: fp16 on CUDA, fp32 on CPU/MPS
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    quantization: Quantization = Quantization.AUTO  # auto: int8 on CPU in fp32 (fastest at equal WER), else none
    threads: int | None = None  # torch intra-op threads on CPU; None = torch's default
    weights: Weights = Weights.PRETRAINED  # or random: the alias's architecture, offline (speed runs)
    allow_pickle: bool = False  # load pickle checkpoints (.bin/.pt, with weights_only=True); safetensors otherwise
    decoder: Decoder = Decoder.AUTO  # decoding loop: auto (lean on the CPU) | lean (whisperctl's) | generate (transformers')

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("attention", parse_choice(Attention, self.attention, "--attn"))
        set_("dtype", parse_choice(DType, self.dtype, "--dtype"))
        set_("quantization", parse_choice(Quantization, self.quantization, "--quantize"))
        set_("decoder", parse_choice(Decoder, self.decoder, "--decoder"))
        if not isinstance(self.model, str) or not self.model.strip():
            raise UsageError("--model: empty model name. Use an alias such as 'tiny.en', a hub id or a path.")
        device = str(self.device).strip().lower()
        if not _DEVICE_RE.match(device):
            raise UsageError(f"--device: unknown device '{self.device}'. Valid: auto, cpu, cuda, cuda:N, mps.")
        set_("device", device)
        if self.threads is not None:
            cpus = os.cpu_count() or 1
            _require_int(self.threads, "--threads", minimum=1, maximum=max(cpus, 1),
                         why=f"this machine has {cpus} CPU threads; more only adds contention")
        _require_bool(self.allow_pickle, "--allow-pickle")
        set_("weights", parse_choice(Weights, self.weights, "--weights"))


@dataclasses.dataclass(frozen=True)
class RunControl(_Options):
    """How a run is driven, not what it decodes: the knobs benchmarks turn. Given to ``Transcriber.transcribe*()``
    beside the :class:`DecodeOptions` (``control=``), defaulted from the EngineConfig; ``WindowDecoder`` acts on it.
    """

    # force exactly N generated tokens per window, no fallback: fixed work for benchmarks (the text changes)
    decode_tokens: int | None = None
    halve_on_oom: bool = True  # on CUDA out-of-memory halve the batch and go on; off: raise (bench's OOM rows)

    def __post_init__(self) -> None:
        _require_token_count(self.decode_tokens, "--decode-tokens")
        _require_bool(self.halve_on_oom, "halve_on_oom")


#: EngineConfig's parts: (attribute, type); each field name belongs to exactly one part.
_PARTS: tuple[tuple[str, type], ...] = (("load", LoadOptions), ("decode", DecodeOptions), ("control", RunControl))
_PART_OF = {f.name: part for part, cls in _PARTS for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True, init=False)
class EngineConfig:
    """Everything a run is configured with (CLI flags and TOML presets map onto it). Validated on construction.

    Three parts: ``load`` (:class:`LoadOptions`, how the model is loaded), ``decode`` (the :class:`DecodeOptions`
    each ``transcribe*()`` call defaults to, ``config.decode_options()``) and ``control`` (the :class:`RunControl`
    each call defaults to: forced token counts, out-of-memory halving). Each documents, defaults and validates its
    own fields; the config takes them by name, flat (``EngineConfig(attention="sdpa", beam_size=5,
    decode_tokens=4)``, ``config.beam_size``), as the CLI and TOML presets give them.
    """

    load: LoadOptions
    decode: DecodeOptions
    control: RunControl

    def __init__(self, load: LoadOptions | None = None, decode: DecodeOptions | None = None,
                 control: RunControl | None = None, **fields: Any):
        unknown = sorted(set(fields) - set(_PART_OF))
        if unknown:
            raise TypeError(f"EngineConfig() got an unexpected keyword argument '{unknown[0]}'")
        given = {"load": load, "decode": decode, "control": control}
        for part, cls in _PARTS:
            value = given[part] or cls()
            changes = {k: v for k, v in fields.items() if _PART_OF[k] == part}
            object.__setattr__(self, part, value.replace(**changes) if changes else value)

    def __getattr__(self, name: str) -> Any:  # only for names not found on the instance: the parts' fields
        if name in _PART_OF:
            return getattr(getattr(self, _PART_OF[name]), name)
        raise AttributeError(f"'EngineConfig' object has no attribute '{name}'")

    @classmethod
    def field_names(cls) -> frozenset[str]:
        """The names a config takes: every load-time option, every per-call default and the run control."""
        return frozenset(_PART_OF)

    def decode_options(self, **changes: Any) -> DecodeOptions:
        """The per-call options this config defaults to, with ``changes`` applied."""
        return self.decode.replace(**changes) if changes else self.decode

    def run_control(self, **changes: Any) -> RunControl:
        """The run control this config defaults to, with ``changes`` applied (``run_control(halve_on_oom=False)``)."""
        return self.control.replace(**changes) if changes else self.control

    @property
    def overlap_s(self) -> float:
        """Overlap between consecutive batched windows, in seconds (DecodeOptions.overlap_s)."""
        return self.decode.overlap_s

    def replace(self, **changes: Any) -> "EngineConfig":
        return EngineConfig(self.load, self.decode, self.control, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view, flat: enums as their values, tuples as lists."""
        return {**self.load.to_dict(), **self.decode.to_dict(), **self.control.to_dict()}

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], base: "EngineConfig | None" = None) -> "EngineConfig":
        """Build from a mapping (a TOML table, CLI flags); unknown keys are a usage error."""
        names = cls.field_names()
        normalised = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(normalised) - names)
        if unknown:
            raise UsageError(f"unknown config key(s): {', '.join(unknown)}. Valid: {', '.join(sorted(names))}.")
        if "temperature" in normalised and isinstance(normalised["temperature"], list):
            normalised["temperature"] = tuple(normalised["temperature"])
        return base.replace(**normalised) if base else cls(**normalised)


def _jsonable(obj: Any) -> dict[str, Any]:
    """A dataclass as JSON-ready values: enums as their values, tuples as lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


#: The tables a TOML preset may hold and the keys each accepts (engine keys: the EngineConfig fields). One
#: preset serves every command, so ``transcribe`` accepts a ``[bench]`` table and ignores it.
BENCH_KEYS = frozenset({"compare", "batch_sizes", "dtypes", "quantize", "models", "warmup", "repeats", "duration",
                        "weights", "decode_tokens", "baseline", "audio", "manifest", "engines"})


def load_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Read and check a TOML preset: ``{"engine": {...}, "bench": {...}}``.

    Engine keys sit under ``[engine]`` or at the top level. A misspelled table or key, a table that is not a
    table, a key given twice (``beam_size`` and ``beam-size``, or at the top level and in ``[engine]``) or a file
    that is not UTF-8 TOML is a :class:`UsageError` naming the file; nothing is ignored silently. Keys come back
    spelled with underscores.
    """
    p = Path(path)
    where = f"--config {p}"
    try:
        with p.open("rb") as fh:
            raw = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(raw) > _MAX_CONFIG_BYTES:
            raise UsageError(f"{where}: larger than {_MAX_CONFIG_BYTES // 1024} KiB; a preset is a few lines of TOML.")
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{where}: no such file. Presets ship in configs/.") from None
    except IsADirectoryError:
        raise UsageError(f"{where}: is a directory; give a .toml file.") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{where}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8.") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"{where}: cannot read it as TOML: {getattr(exc, 'strerror', None) or exc}") from None
    valid = {"engine": EngineConfig.field_names(), "bench": BENCH_KEYS}
    out: dict[str, dict[str, Any]] = {"engine": {}, "bench": {}}
    written: dict[tuple[str, str], tuple[str, str]] = {}  # (table, key with underscores) → (key as written, where)

    def put(table: str, key: str, value: Any, place: str) -> None:
        name = str(key).replace("-", "_")
        if isinstance(value, dict):
            raise UsageError(f"{where}: [{table}] {key} must be a value, not a table.")
        if name not in valid[table]:
            raise UsageError(f"{where}: unknown key '{key}' in [{table}].{_did_you_mean(key, valid[table])} "
                             f"Valid: {', '.join(sorted(valid[table]))}.")
        if (table, name) in written:  # TOML itself refuses only the same spelling twice in one table
            first, first_place = written[(table, name)]
            both = (f"'{first}' and '{key}' {place} are one key spelled two ways" if first_place == place
                    else f"'{first}' {first_place} and '{key}' {place} are the same key")
            raise UsageError(f"{where}: {both}; keep one.")
        written[(table, name)] = (str(key), place)
        out[table][name] = value

    for key, value in data.items():
        if key in out:
            if not isinstance(value, dict):
                raise UsageError(f"{where}: '{key}' must be a table ([{key}]), got {type(value).__name__} {value!r}.")
            for inner, inner_value in value.items():
                put(key, inner, inner_value, f"in [{key}]")
        elif isinstance(value, dict):
            raise UsageError(f"{where}: unknown table [{key}]. Valid: [engine], [bench].{_did_you_mean(key, out)}")
        else:
            put("engine", key, value, "at the top level")  # top-level engine keys (flat presets)
    return out


_MAX_CONFIG_BYTES = 1 << 20


def _did_you_mean(key: str, valid: Any) -> str:
    close = difflib.get_close_matches(str(key).replace("-", "_"), list(valid), n=1, cutoff=0.6)
    return f" Did you mean '{close[0]}'?" if close else ""


def _clip_timestamps(value: Any) -> tuple[float, ...]:
    """``"0,10.5,20,30"`` or a sequence of seconds → a tuple of ascending, non-overlapping clip edges."""
    example = "e.g. 0,10.5,20,30 (two clips) or 60 (from 60 s to the end)"
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if any(p == "" for p in parts):
            raise UsageError(f"--clip-timestamps: '{value}' has an empty value; give start,end,… in seconds, {example}.")
        value = parts
    if isinstance(value, (int, float)):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not value or len(value) > 2 * MAX_CLIPS:
        raise UsageError(f"--clip-timestamps: give 1 to {2 * MAX_CLIPS} times in seconds, {example}.")
    times = tuple(_require_float(v, "--clip-timestamps") for v in value)
    if any(not math.isfinite(t) or t < 0 for t in times):
        raise UsageError(f"--clip-timestamps: times are seconds ≥ 0, {example}.")
    for i in range(1, len(times)):
        if times[i] <= times[i - 1]:
            what = "ends before it starts" if i % 2 else "starts before the previous clip ends"
            raise UsageError(f"--clip-timestamps: clip {(i + 1) // 2 + (0 if i % 2 else 1)} {what} "
                             f"({times[i - 1]:g} then {times[i]:g}); give ascending, non-overlapping clips, {example}.")
    return times


def _require_int(value: Any, option: str, minimum: int, maximum: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{option}: must be an integer ≥ {minimum}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise UsageError(f"{option}: {value} is above the maximum {maximum}{f' ({why})' if why else ''}.")
    return value


def _require_token_count(value: Any, option: str) -> None:
    """A count of generated tokens per window (None: not given): at most the decoder's positions."""
    if value is not None:
        _require_int(value, option, minimum=1, maximum=MAX_DECODER_TOKENS, why="Whisper's decoder has 448 positions")


def _require_bool(value: Any, option: str) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{option}: must be true or false, got {value!r}.")
    return value


def _require_float(value: Any, option: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{option}: '{value}' is not a number.") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise UsageError(f"{option}: must be a finite number, got {value!r}.")
    return out
