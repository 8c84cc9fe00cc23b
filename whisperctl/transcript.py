"""Final tokens → segments (emitted as soon as they can no longer change) → the :class:`Transcript`.

Both chunking modes hand the tokens they have settled to a :class:`TranscriptBuilder`; it builds segments in
order, remembers each window's decode quality for the segments it yields, and assembles the self-describing
result at the end. The transcript's segments are exactly the segments streamed, in the same order.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Union

from . import longform
from .inputs import AudioInput, input_identity
from .decoding import WARNINGS, WindowResult
from .errors import WhisperctlError
from .hallucinations import SilenceFilter
from .repetition import repeated_share
from .loaded import LoadedModel
from .results import Segment, Transcript


@dataclasses.dataclass(frozen=True)
class SegmentReady:
    """A segment of ``source`` that can no longer change."""

    source: AudioInput
    segment: Segment


@dataclasses.dataclass(frozen=True)
class FileDone:
    """``source`` is finished: its transcript, or the error that stopped it."""

    source: AudioInput
    result: Union[Transcript, WhisperctlError]


@dataclasses.dataclass(frozen=True)
class ResumePoint:
    """Where a sequential run of one input stands once a window's segments have all been emitted: decoding may
    start again here and give the very windows, prompts and text that follow in an uninterrupted run.
    ``section``: the section (lane) to start in (sections before it are done); ``seek``, ``window`` and
    ``history``: that section's seeking state (sample in the section's stream, index of its next window, the
    prompt tokens before it); ``built_until``: the end of the last segment in decoded-audio time; ``duration``:
    seconds of the stream read by finished sections."""

    section: int
    seek: int
    window: int
    history: tuple[int, ...]
    built_until: float
    language: str | None
    duration: float

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "history": list(self.history)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ResumePoint":
        return cls(int(data["section"]), int(data["seek"]), int(data["window"]), tuple(int(t) for t in data["history"]),
                   float(data["built_until"]), data.get("language"), float(data["duration"]))


@dataclasses.dataclass(frozen=True)
class Resume:
    """An interrupted input's settled segments (in the original file's time) and the point to go on from."""

    segments: list[Segment]
    point: ResumePoint


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """``source``'s segments emitted so far are settled, and decoding could go on from ``point`` (sequential
    chunking, when the run was asked for checkpoints: what a journal records)."""

    source: AudioInput
    point: ResumePoint


Event = Union[SegmentReady, FileDone, Checkpoint]


def window_tokens(
    loaded: LoadedModel, key: Any, tokens: list[int], start: float, duration: float,
    token_times: list[tuple[float, float, float]] | None,
) -> list[longform.TimedToken]:
    """A window's decoded ``tokens`` as absolutely timed text tokens (measured word times where aligned)."""
    timed = longform.parse_window(
        tokens, key, start, duration, loaded.eos_id, loaded.timestamp_begin, lambda t: len(loaded.token_str(t)),
    )
    longform.apply_token_times(timed, token_times, start)
    return timed


class TranscriptBuilder:
    """``speech``: the :class:`~whisperctl.regions.SpeechStream` the windows were cut from (None: times and
    duration are the runner's); its ``time_map.span`` (where it has one) maps segment and word times back to the
    original audio (and keeps them off pauses), its ``duration`` is the file's, and its ``record()`` goes into the
    transcript. ``silence_threshold``:
    ``--hallucination-silence-threshold`` (segments then pass a :class:`~whisperctl.hallucinations.SilenceFilter`,
    which may hold one back until the next arrives: runners call :meth:`close` before :meth:`finish`)."""

    def __init__(self, source: AudioInput, decode: Callable[[list[int]], str], is_word_start: Callable[[int], bool],
                 with_words: bool, speech: Any = None, silence_threshold: float | None = None):
        self.source = source
        self.speech = speech
        self._filter = SilenceFilter(silence_threshold) if silence_threshold is not None else None
        self._built_until = 0.0  # end of the last segment built, in the decoded audio's time
        self.segments: list[Segment] = []
        self.language: str | None = None
        self.language_candidates: list[tuple[str, float]] | None = None  # when detected: top languages, best first
        self.decode_s = 0.0
        self.align_s = 0.0
        self.started = time.perf_counter()
        self._decode, self._is_word_start, self._with_words = decode, is_word_start, with_words
        self._quality: dict[Any, dict[str, float | None]] = {}

    def window_decoded(self, key: Any, result: WindowResult, decode_s: float) -> None:
        """Book window ``key``'s decoding time and remember its quality for the segments built from it."""
        self.decode_s += decode_s
        self.align_s += result.align_s
        self._quality[key] = {
            "avg_logprob": round(result.avg_logprob, 4),
            "no_speech_prob": None if result.no_speech_prob is None else round(result.no_speech_prob, 4),
            "compression_ratio": round(result.compression_ratio, 3),
            "temperature": result.temperature,
            "warning": result.warning,
        }
        if self.language is None:
            self.language = result.language
            self.language_candidates = result.language_candidates

    def add(self, tokens: list[longform.TimedToken], duration: float = math.inf) -> list[Segment]:
        """Segments of ``tokens`` (settled, in order, after everything added before); returns the new ones."""
        new = longform.build_segments(
            tokens, self._decode, duration, with_words=self._with_words, is_word_start=self._is_word_start,
            prev_end=self._built_until, quality=lambda key: self._quality.get(key, {}),
        )
        if new:
            self._built_until = new[-1].end
        time_map = self.speech.time_map if self.speech is not None else None  # None: times are the file's
        if time_map is not None:
            for seg in new:
                seg.start, seg.end = (round(t, 3) for t in time_map.span(seg.start, seg.end))
                for word in seg.words or ():
                    word.start, word.end = (round(t, 3) for t in time_map.span(word.start, word.end))
        for seg in new:
            seg.repetition = repeated_share(seg.text)
        if self._filter is not None:
            new = self._filter.feed(new)
        self.segments.extend(new)
        return new

    def close(self, duration: float) -> list[Segment]:
        """The segments still held back (by the hallucination filter) once the file's audio is all decoded."""
        if self._filter is None:
            return []
        new = self._filter.finish(self.speech.duration if self.speech is not None else duration)
        self.segments.extend(new)
        return new

    @property
    def built_until(self) -> float:
        """End of the last segment built, in the decoded audio's time."""
        return self._built_until

    @property
    def holds_back(self) -> bool:
        """Whether a segment may be held back after :meth:`add` (the hallucination filter waits for the next)."""
        return self._filter is not None

    def resume(self, resume: Resume) -> None:
        """Start from an interrupted run's settled segments (nothing built yet)."""
        self.segments = list(resume.segments)
        self._built_until = resume.point.built_until
        self.language = resume.point.language

    def forget(self, keys: Any) -> None:
        """Drop the quality of windows whose segments are all built (memory stays flat on long files)."""
        for key in keys:
            self._quality.pop(key, None)

    def finish(self, duration: float, config: dict[str, Any], runtime: dict[str, Any]) -> Transcript:
        total = time.perf_counter() - self.started
        if self.speech is not None:
            duration = self.speech.duration  # the file's, not the speech kept
        return Transcript(
            source=self.source.name,
            origin=None if self.source.path is None else input_identity(self.source.name),
            text=(text := "".join(s.text for s in self.segments).strip()),
            repetition=repeated_share(text),
            segments=self.segments,
            language=self.language,
            language_probability=self.language_candidates[0][1] if self.language_candidates else None,
            language_candidates=[list(c) for c in self.language_candidates] if self.language_candidates else None,
            duration=round(duration, 3),
            config=config,
            runtime=runtime,
            timings={
                "decode_s": round(self.decode_s, 4),
                "align_s": round(self.align_s, 4),
                "total_s": round(total, 4),
                "rtfx": round(duration / total, 2) if total > 0 else None,
            },
            speech=self.speech.record() if self.speech is not None else None,
            warnings=warnings_of(self.segments),
        )


def warnings_of(segments: list[Segment]) -> list[dict[str, Any]]:
    """The transcript's warnings: consecutive segments with the same warning code merged into one time range."""
    out: list[dict[str, Any]] = []
    last: Segment | None = None
    for seg in segments:
        if seg.warning is None:
            last = None
            continue
        if last is not None and out[-1]["code"] == seg.warning:
            entry = out[-1]
            entry["end"] = seg.end
            entry["segments"] += 1
            entry["repetition"] = max(entry["repetition"], seg.repetition or 0.0)
        else:
            out.append({"code": seg.warning, "message": WARNINGS.get(seg.warning, seg.warning), "start": seg.start,
                        "end": seg.end, "segments": 1, "repetition": seg.repetition or 0.0})
        last = seg
    return out


def warning_summary(t: Transcript) -> str | None:
    """One line on what in ``t`` is suspect, with its time ranges (None when nothing is): what the CLI prints."""
    if not t.warnings:
        return None
    parts = []
    for code in dict.fromkeys(w["code"] for w in t.warnings):
        spans = [w for w in t.warnings if w["code"] == code]
        where = ", ".join(f"{_clock(w['start'])}-{_clock(w['end'])}" for w in spans[:4])
        more = f" and {len(spans) - 4} more" if len(spans) > 4 else ""
        parts.append(f"{WARNINGS.get(code, code)} at {where}{more} [{code}]")
    return "; ".join(parts) + "; every temperature failed there and the least-bad attempt was kept"


def _clock(seconds: float) -> str:
    tenths = round(max(seconds, 0.0) * 10)  # rounded first: 59.97 s is 1:00.0, never 0:60.0
    minutes, tenth_seconds = divmod(tenths, 600)
    hours, minutes = divmod(minutes, 60)
    sec = f"{tenth_seconds // 10:02d}.{tenth_seconds % 10}"
    return f"{hours}:{minutes:02d}:{sec}" if hours else f"{minutes}:{sec}"
