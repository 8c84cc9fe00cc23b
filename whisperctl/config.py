"""The one frozen configuration shared by ``transcribe``, ``bench`` and ``doctor``: the options, each declared once.

Closed choices are ``str`` Enums (:mod:`whisperctl.choices`, re-exported here); TOML presets are read by
:mod:`whisperctl.presets`. Each option is one dataclass field with its
default, flag, help and command-line type (:func:`_opt`); the CLI's options and the validation messages' flag
names come from those fields. Options come in two
lifetimes: :class:`LoadOptions` (how the model is loaded) and :class:`DecodeOptions` (per call); beside them
:class:`RunControl` says how a run is driven (forced work and out-of-memory handling, for benchmarks) rather than
what it decodes. :class:`EngineConfig` is the three together. All validation that does not need hardware facts lives in their
``__post_init__``, so a bad option fails before any model is loaded. Hardware-dependent checks (can FA2 run
here?) live in :mod:`whisperctl.eligibility`.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
from typing import Any, Mapping, TypeVar

from .choices import (  # noqa: F401 (OutputFormat and the others are re-exported: whisperctl.config names them)
    Attention, Chunking, Decoder, DType, OutputFormat, Quantization, Task, Timestamps, Vad, Weights, parse_choice,
)
from .errors import UsageError


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

#: the commands an option is a flag of, unless its field says otherwise
COMMANDS = ("transcribe", "bench")


def _opt(default: Any, flag: str | None, help: str, *, cli_type: type = str,
         commands: tuple[str, ...] = COMMANDS, limits: tuple[float, float] | None = None) -> Any:
    """One option, declared once: its default, its command-line flag (None: library only), its help, the type
    the command line reads it as (choices and lists as text), the commands that take it and, for a number, the
    bounds its check enforces (:func:`limits`). The Typer options
    (``whisperctl.cli.options``), the validation messages (:func:`flag`), TOML presets (the field name) and the
    README's options table (checked by tests/test_config.py) all come from here."""
    return dataclasses.field(default=default, metadata={"flag": flag, "help": help, "cli_type": cli_type,
                                                        "commands": commands, "limits": limits})


def option_fields() -> list[dataclasses.Field]:
    """Every option of :class:`LoadOptions`, :class:`DecodeOptions` and :class:`RunControl`, in that order."""
    return [f for cls in (LoadOptions, DecodeOptions, RunControl) for f in dataclasses.fields(cls)]


def _field(name: str) -> dataclasses.Field:
    for f in option_fields():
        if f.name == name:
            return f
    raise KeyError(name)


def flag(name: str) -> str:
    """The command-line flag of option ``name`` (its field name in messages for a library-only option)."""
    return _field(name).metadata["flag"] or name


def limits(name: str) -> tuple[Any, Any]:
    """The (lowest, highest) value option ``name`` takes, as its field declares them."""
    bounds = _field(name).metadata["limits"]
    if bounds is None:
        raise KeyError(f"{name} declares no limits")
    return bounds


def option_help(name: str) -> str:
    return _field(name).metadata["help"]


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

    batch_size: int = _opt(8, "--batch-size", cli_type=int,
                           limits=(1, MAX_BATCH_SIZE), help="Windows decoded together, across chunks and files.")
    # openai-whisper's seeking, inputs in lock-step; or batched overlapping windows
    chunking: Chunking = _opt(Chunking.SEQUENTIAL, "--chunking", cli_type=str,
                              help="sequential (default: openai-whisper's seeking, files batched in lock-step) | "
                                   "batched (overlapping windows, merged at seams) | vad (speech regions merged into "
                                   "windows cut at pauses).")
    # window length for batched chunking, [1, 30]
    chunk_length_s: float = _opt(30.0, "--chunk-length", cli_type=float,
                                 limits=(MIN_CHUNK_SECONDS, MAX_CHUNK_SECONDS),
                                 help="Window length in seconds for batched chunking, [1, 30].")
    # overlap between windows; None = chunk_length_s / 6
    chunk_overlap_s: float | None = _opt(None, "--chunk-overlap", cli_type=float,
        help="Overlap between windows in seconds (default: chunk length / 6).")
    # sequential: a long file's speech is cut at the first pause after every this many seconds into sections whose
    # seeking loops run side by side in the batch (needs the VAD or clip timestamps); 0 = one loop per file
    section_length_s: float = _opt(60.0, "--section-length", cli_type=float,
                                   limits=(0.0, MAX_SECTION_SECONDS),
                                   help="Sequential chunking with the VAD: cut a long file at the first pause after "
                                        "every this many seconds of speech into sections decoded side by side (0: one "
                                        "loop per file).")
    # ISO code or name; None = English for .en models, detect otherwise
    language: str | None = _opt(None, "--language", cli_type=str,
                                help="Spoken language (en, de, french …); default: detect (English for .en models).")
    task: Task = _opt(Task.TRANSCRIBE, "--task", cli_type=str,
                      help="transcribe | translate (to English; multilingual models only).")
    # word timestamps add an eager-attention alignment pass
    timestamps: Timestamps = _opt(Timestamps.SEGMENT, "--timestamps", cli_type=str,
                                  help="none | segment | word (word adds an eager-attention alignment pass).")
    beam_size: int = _opt(1, "--beam-size", cli_type=int,
                          limits=(1, MAX_BEAM_SIZE), help="1 = greedy.")
    # sampled fallback passes (temperature > 0) draw this many candidates per window and keep the one with the best
    # log-probability per token (openai-whisper's CLI and faster-whisper default to 5)
    best_of: int = _opt(5, "--best-of", cli_type=int,
                        limits=(1, MAX_BEAM_SIZE),
                        help="Sampled fallback passes: candidates drawn per window, the most probable kept.")
    # tried in turn while a decode fails the thresholds
    temperature: tuple[float, ...] = _opt(DEFAULT_TEMPERATURES, "--temperature", cli_type=str,
        help="One value, or a comma list for fallback (e.g. 0,0.2,0.4).")
    # None: no repetition check
    compression_ratio_threshold: float | None = _opt(COMPRESSION_RATIO_THRESHOLD, "--compression-ratio-threshold",
        cli_type=float,
        help="Decode again hotter when the text's gzip ratio exceeds this.")
    # None: no log-probability check
    logprob_threshold: float | None = _opt(LOGPROB_THRESHOLD, "--logprob-threshold", cli_type=float,
        help="Decode again hotter when the mean token log-probability is below this.")
    # None: never call a window silence
    no_speech_threshold: float | None = _opt(NO_SPEECH_THRESHOLD, "--no-speech-threshold", cli_type=float,
        limits=(0.0, 1.0), help="A window is silence when P(no speech) exceeds this and its log-probability is low.")
    # sequential: prompt each window with the text before it
    condition_on_previous_text: bool = _opt(True, "--condition-on-previous-text/--no-condition-on-previous-text",
        cli_type=bool,
        help="Sequential chunking: prompt each window with the text before it.")
    initial_prompt: str | None = _opt(None, "--initial-prompt", cli_type=str,
                                      help="Text that conditions decoding (names, spelling).")
    # sampled fallback passes: each window draws from its own generator, seeded by this and its audio
    seed: int = _opt(0, "--seed", cli_type=int,
                     limits=(0, 2**63 - 1),
                     help="Seed of the sampled fallback passes (each window its own draw: same input, same text).")
    # cap per window; None = model maximum
    max_new_tokens: int | None = _opt(None, "--max-new-tokens", cli_type=int,
                                      limits=(1, MAX_DECODER_TOKENS), help="Cap on generated tokens per window.")
    # Voice activity detection: None = silero (none with clip timestamps): non-speech is removed before decoding,
    # times mapped back to the original audio (vad_in_effect).
    vad: Vad | None = _opt(None, "--vad", cli_type=str,
                           help="skip (default: leave out only long stretches that are surely not speech) | silero "
                                "(decode only its speech regions; the default with --chunking vad) | none (every "
                                "sample; the default with --clip-timestamps).")
    # None: the VAD's own value (vad_params: skip 0.3 / 4000 / 1000, silero 0.5 / 2000 / 400)
    vad_threshold: float | None = _opt(None, "--vad-threshold", cli_type=float,
                                       limits=(0.0, 1.0),
                                       help="VAD: speech probability that starts a region, in (0, 1).")
    min_silence_ms: int | None = _opt(None, "--min-silence-ms", cli_type=int,
                                      limits=(0, MAX_VAD_MS), help="VAD: silence that ends a speech region, in ms.")
    # audio kept on each side of a region
    speech_pad_ms: int | None = _opt(None, "--speech-pad-ms", cli_type=int,
                                     limits=(0, MAX_VAD_MS),
                                     help="VAD: audio kept on each side of a speech region, in ms.")
    # openai-whisper's --clip_timestamps: (start, end, start, end …) seconds of each file to decode, ascending;
    # an odd count leaves the last clip open to the end of the file. None: the whole file.
    clip_timestamps: tuple[float, ...] | None = _opt(None, "--clip-timestamps", cli_type=str,
        help="start,end,start,end… seconds of each file to decode (openai-whisper's); an odd count runs the last clip "
             "to the end.")
    # openai-whisper's: drop a segment that looks invented (improbable, too short or long words) when silence of
    # more than this many seconds surrounds it. Needs word timestamps. None: off.
    hallucination_silence_threshold: float | None = _opt(None, "--hallucination-silence-threshold", cli_type=float,
        limits=(0.0, MAX_HALLUCINATION_SILENCE_S),
        help="With --timestamps word: drop a segment that looks invented when silence longer than this (s) surrounds "
             "it.")

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
        self._set("chunking", parse_choice(Chunking, self.chunking, flag("chunking")))
        if self.vad is not None:
            self._set("vad", parse_choice(Vad, self.vad, flag("vad")))
        if self.vad == Vad.NONE and self.chunking == Chunking.VAD:
            raise UsageError("--chunking vad: cuts windows at the pauses a VAD finds; drop --vad none (or use --vad silero).")
        if self.vad_threshold is not None:
            threshold = _require_float(self.vad_threshold, flag("vad_threshold"))
            low, high = limits("vad_threshold")
            if not low < threshold < high:
                raise UsageError(f"--vad-threshold: {threshold:g} is a speech probability; give a value in ({low:g}, "
                                 f"{high:g}), e.g. 0.5.")
            self._set("vad_threshold", threshold)
        if self.min_silence_ms is not None:
            _require_int(self.min_silence_ms, flag("min_silence_ms"), *limits("min_silence_ms"),
                         why="a pause that long is never inside speech")
        if self.speech_pad_ms is not None:
            _require_int(self.speech_pad_ms, flag("speech_pad_ms"), *limits("speech_pad_ms"),
                         why="more padding than that only decodes silence")

    def _check_output_shape(self) -> None:
        """Task, timestamps, the clips to decode and the hallucination filter (which needs word timestamps)."""
        self._set("task", parse_choice(Task, self.task, flag("task")))
        self._set("timestamps", parse_choice(Timestamps, self.timestamps, flag("timestamps")))
        if self.clip_timestamps is not None:
            self._set("clip_timestamps", _clip_timestamps(self.clip_timestamps))
            if self.vad_in_effect != Vad.NONE or self.chunking == Chunking.VAD:
                other = "--chunking vad" if self.chunking == Chunking.VAD else "--vad silero"
                raise UsageError(f"--clip-timestamps: cannot be combined with {other}: the clips already say which audio "
                                 "to decode. Drop one of them.")
        if self.hallucination_silence_threshold is not None:
            silence = _require_float(self.hallucination_silence_threshold, flag("hallucination_silence_threshold"))
            low, high = limits("hallucination_silence_threshold")
            if not low < silence <= high:
                raise UsageError(f"--hallucination-silence-threshold: {silence:g} s; give seconds of silence in "
                                 f"({low:g}, {high:g}], e.g. 2.")
            if self.timestamps != Timestamps.WORD:
                raise UsageError("--hallucination-silence-threshold: judges segments by their words' timing and "
                                 "probability; add --timestamps word.")
            self._set("hallucination_silence_threshold", silence)

    def _check_sizes(self) -> None:
        _require_int(self.batch_size, flag("batch_size"), *limits("batch_size"))
        _require_int(self.beam_size, flag("beam_size"), *limits("beam_size"),
                     why="larger beams multiply memory without improving accuracy; 5 is the usual choice")
        _require_int(self.best_of, flag("best_of"), *limits("best_of"),
                     why="each candidate is a whole sampled decode of the window; 5 is the usual choice")
        _require_token_count(self.max_new_tokens, flag("max_new_tokens"))

    def _check_window_length(self) -> None:
        chunk = _require_float(self.chunk_length_s, flag("chunk_length_s"))
        low, high = limits("chunk_length_s")
        if not low <= chunk <= high:
            raise UsageError(f"--chunk-length: {chunk:g} s is outside [{low:g}, {high:g}]. "
                             "Whisper windows are at most 30 s; shorter than 1 s leaves nothing to decode.")
        section = _require_float(self.section_length_s, flag("section_length_s"))
        low, high = limits("section_length_s")
        if not low <= section <= high:
            raise UsageError(f"--section-length: {section:g} s; give seconds of speech per section in [{low:g}, "
                             f"{high:g}] (0: one seeking loop per file), e.g. 60.")
        self._set("section_length_s", section)
        if self.chunk_overlap_s is not None:
            overlap = _require_float(self.chunk_overlap_s, flag("chunk_overlap_s"))
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
        temps = tuple(_require_float(t, flag("temperature")) for t in temps)
        if not temps or any(not 0.0 <= t <= 1.0 for t in temps):
            raise UsageError("--temperature: give one or more values in [0, 1], e.g. 0 or 0,0.2,0.4.")
        self._set("temperature", temps)

    def _check_thresholds(self) -> None:
        """The fallback thresholds, the seed of the sampled passes and conditioning on previous text."""
        for name in ("compression_ratio_threshold", "logprob_threshold", "no_speech_threshold"):
            value = getattr(self, name)
            if value is not None:
                self._set(name, _require_float(value, flag(name)))
        self._set("seed", _require_int(self.seed, flag("seed"), *limits("seed")))
        low, high = limits("no_speech_threshold")
        if self.no_speech_threshold is not None and not low <= self.no_speech_threshold <= high:
            raise UsageError(f"--no-speech-threshold: {self.no_speech_threshold:g} is a probability; give a value in [0, 1].")
        if self.compression_ratio_threshold is not None and self.compression_ratio_threshold <= 0:
            raise UsageError("--compression-ratio-threshold: must be > 0 (openai-whisper's default is 2.4).")
        if self.logprob_threshold is not None and self.logprob_threshold > 0:
            raise UsageError("--logprob-threshold: log-probabilities are ≤ 0 (openai-whisper's default is -1.0).")
        _require_bool(self.condition_on_previous_text, flag("condition_on_previous_text"))

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

    # alias, hub repo id, transformers dir or CTranslate2 dir; tiny.en is bundled
    model: str = _opt("tiny.en", "--model", cli_type=str,
                      help="Alias (tiny.en, small, large-v3, distil-large-v3 …), hub id, transformers dir or "
                           "CTranslate2 dir.")
    # attention kernel; auto picks fa2 > sdpa > eager by eligibility
    attention: Attention = _opt(Attention.AUTO, "--attn", cli_type=str,
                                help="auto | eager | sdpa | sdpa:flash|efficient|math|cudnn | flash_attention_2 (fa2) "
                                     "| flex_attention.")
    # auto: fp16 on CUDA, fp32 on CPU/MPS
    dtype: DType = _opt(DType.AUTO, "--dtype", cli_type=str,
                        help="auto | fp32 | fp16 | bf16.")
    device: str = _opt("auto", "--device", cli_type=str,
                       help="auto | cpu | cuda | cuda:N | mps.")
    # auto: int8 on CPU in fp32 (fastest at equal WER), else none
    quantization: Quantization = _opt(Quantization.AUTO, "--quantize", cli_type=str,
                                      help="auto (int8 on CPU, none on GPU) | none | int8 | int4.")
    # torch intra-op threads on CPU; None = torch's default
    threads: int | None = _opt(None, "--threads", cli_type=int,
                               help="CPU threads for torch.")
    weights: Weights = _opt(Weights.PRETRAINED, "--weights", cli_type=str, commands=('bench',),
                            help="pretrained | random (architecture only, no download; text/WER blank).")
    # load pickle checkpoints (.bin/.pt, with weights_only=True); safetensors otherwise
    allow_pickle: bool = _opt(False, "--allow-pickle", cli_type=bool,
                              help="Load pickle (.bin) checkpoints (weights_only=True). Off: safetensors only.")
    decoder: Decoder = _opt(Decoder.AUTO, "--decoder", cli_type=str,
                            help="auto (whisperctl's lean loop on CPU, generate() elsewhere) | lean (any device) | "
                                 "generate (transformers').")

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen dataclass)
        set_("attention", parse_choice(Attention, self.attention, flag("attention")))
        set_("dtype", parse_choice(DType, self.dtype, flag("dtype")))
        set_("quantization", parse_choice(Quantization, self.quantization, flag("quantization")))
        set_("decoder", parse_choice(Decoder, self.decoder, flag("decoder")))
        if not isinstance(self.model, str) or not self.model.strip():
            raise UsageError("--model: empty model name. Use an alias such as 'tiny.en', a hub id or a path.")
        device = str(self.device).strip().lower()
        if not _DEVICE_RE.match(device):
            raise UsageError(f"--device: unknown device '{self.device}'. Valid: auto, cpu, cuda, cuda:N, mps.")
        set_("device", device)
        if self.threads is not None:
            cpus = os.cpu_count() or 1
            _require_int(self.threads, flag("threads"), minimum=1, maximum=max(cpus, 1),
                         why=f"this machine has {cpus} CPU threads; more only adds contention")
        _require_bool(self.allow_pickle, flag("allow_pickle"))
        set_("weights", parse_choice(Weights, self.weights, flag("weights")))


@dataclasses.dataclass(frozen=True)
class RunControl(_Options):
    """How a run is driven, not what it decodes: the knobs benchmarks turn. Given to ``Transcriber.transcribe*()``
    beside the :class:`DecodeOptions` (``control=``), defaulted from the EngineConfig; ``WindowDecoder`` acts on it.
    """

    # force exactly N generated tokens per window, no fallback: fixed work for benchmarks (the text changes)
    decode_tokens: int | None = _opt(None, "--decode-tokens", cli_type=int, commands=('bench',),
                                     limits=(1, MAX_DECODER_TOKENS),
                                     help="Force exactly N generated tokens per window.")
    halve_on_oom: bool = _opt(True, None, cli_type=bool, commands=(),
                              help="On CUDA out-of-memory halve the batch and go on; off: raise (bench's OOM rows).")

    def __post_init__(self) -> None:
        _require_token_count(self.decode_tokens, flag("decode_tokens"))
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
    times = tuple(_require_float(v, flag("clip_timestamps")) for v in value)
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
        _require_int(value, option, *limits("max_new_tokens"), why="Whisper's decoder has 448 positions")


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

