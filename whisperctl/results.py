"""Self-describing results: the text, its timing, and the options and machine that produced it."""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class Word:
    start: float
    end: float
    word: str  # with its leading space, as Whisper emits it
    probability: float | None = None


@dataclasses.dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int] = dataclasses.field(default_factory=list)
    words: list[Word] | None = None
    # Quality of the window decode the segment comes from (openai-whisper's fields): filter hallucinations
    # with them, e.g. a low avg_logprob with a high no_speech_prob, or a compression_ratio above 2.4.
    avg_logprob: float | None = None  # mean log-probability of the window's generated tokens
    no_speech_prob: float | None = None  # P(<|nospeech|>) at the window's start
    compression_ratio: float | None = None  # gzip ratio of the window's text (repetition loops score high)
    temperature: float | None = None  # of the decode that was kept (> 0: a fallback pass)
    # the window's decode failed at every temperature and its least-bad attempt was kept: a code of
    # whisperctl.decoding.WARNINGS ("repetition_loop", "repetitive_text", "low_logprob"); None when it passed
    warning: str | None = None
    # share of the segment's words in a phrase of 1-4 words repeated 3+ times in a row (0: none; a loop: near 1)
    repetition: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Segment":
        """A segment as ``dataclasses.asdict`` wrote it (a journal line, the CLI's JSON); unknown keys ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        words = data.get("words")
        return cls(**{k: v for k, v in data.items() if k in known and k != "words"},
                   words=[Word(**w) for w in words] if words is not None else None)


@dataclasses.dataclass
class Transcript:
    source: str  # the input as the user named it
    text: str
    segments: list[Segment]
    language: str | None
    duration: float  # seconds of audio
    config: dict[str, Any]  # the EngineConfig that produced it
    runtime: dict[str, Any]  # device, dtype, attention actually in effect, versions, model
    timings: dict[str, float]  # seconds: decode, align, total; rtfx
    origin: dict[str, Any] | None = None  # the input file: real path, size, content fingerprint (None for arrays)
    # with a VAD: the speech regions kept ([start, end] seconds), speech_s, audio_s, skipped_share; else None
    speech: dict[str, Any] | None = None
    # when the language was detected (multilingual models without --language): its probability, and the most
    # likely languages with theirs, [code, probability] best first; None when given or English-only
    language_probability: float | None = None
    language_candidates: list[list[Any]] | None = None
    repetition: float = 0.0  # the text's repetition score, as a segment's
    # time ranges whose text is suspect (segments with a warning, merged per code): code, message, start, end,
    # segments, and the highest segment repetition score in the range; [] when none
    warnings: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Transcript":
        """The inverse of :meth:`to_dict` (what ``writers.to_json`` writes); unknown keys ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known and k != "segments"},
                   segments=[Segment.from_dict(s) for s in data.get("segments", [])])
