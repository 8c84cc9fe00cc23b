"""One file's windows in batched chunking: planned → decoded → merged → settled → complete.

:class:`FileWindows` is the state the batched scheduler (:mod:`whisperctl.scheduler`) keeps per file, as a pure
class over :mod:`whisperctl.longform`'s windows and timed tokens: no model, no decoder, no events. The scheduler
plans each window read from the file, hands back its decoded tokens, asks which gap windows are due and which
tokens have settled, and builds segments from them; the rules for all of that live here and are tested with
fake window results (tests/test_filewindows.py).

A window's single decoding pass ends at its last complete segment, so its tail may stay untranscribed; when
that tail reaches past the start of the next window, a *gap window* starting where the transcription stopped
covers it (the batched counterpart of openai-whisper's seeking). Gap windows are keyed
``WindowKey(index, gap=True)`` and sort between window ``index`` and ``index + 1``. Windows from a VAD
(``independent``) do not overlap: they are joined without a seam search, and a window whose text stops well
before its end gets a gap window for the rest of it.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from . import longform
from .audio import SAMPLE_RATE
from .errors import WhisperctlError

MERGE_SLACK_S = 1.5  # how far before a seam merging may still change tokens (longform.merge's slack)
LAST_TAIL_S = 2.0  # untranscribed end of a file's last window worth a gap window
SEAM_GAP_S = 0.2  # text stopping this long before the next window starts leaves audio untranscribed


@dataclasses.dataclass(frozen=True, order=True)
class WindowKey:
    index: int
    gap: bool = False  # covers audio window ``index`` left untranscribed before window ``index + 1``


@dataclasses.dataclass(frozen=True)
class Windowing:
    """How a file's windows were cut, and whether untranscribed tails get gap windows."""

    chunk_length_s: float
    overlap_s: float
    independent: bool = False  # windows from a VAD: no overlap, no seams
    gaps: bool = True  # look for gap windows (off for random weights: their text means nothing)
    vad_tail_s: float = LAST_TAIL_S  # untranscribed end of a VAD window worth a gap window


class Settled(NamedTuple):
    tokens: list[longform.TimedToken]  # merged tokens no later window can change, in order
    windows_done: set[object]  # window keys none of whose tokens remain unsettled


class FileWindows:
    """The windows of one file, from planned to settled. Memory: a few windows, whatever the file's length."""

    def __init__(self, windowing: Windowing):
        self.windowing = windowing
        self.error: WhisperctlError | None = None
        self._spans: dict[WindowKey, tuple[float, float]] = {}  # planned windows: key -> (start, duration)
        self._tokens: dict[WindowKey, list[longform.TimedToken]] = {}  # decoded, not merged
        # decoded windows whose gap decision is pending, with the end of their text (None: no text)
        self._kept: dict[int, tuple[longform.Window, float | None]] = {}
        self._pending = 0  # planned windows not decoded yet
        self._exhausted = False  # every window of the file has been planned
        self._last_index: int | None = None
        self._merged: list[longform.TimedToken] = []  # merged, not yet settled
        self._next_key = WindowKey(0)
        self._prev_end: float | None = None  # end of the last merged window
        self._reported = 0.0  # audio seconds already counted as decoded

    # ------------------------------------------------------------ transitions
    def plan(self, window: longform.Window) -> WindowKey:
        """Window ``window`` was read from the file and waits to be decoded."""
        key = WindowKey(window.index)
        self._add(key, window)
        return key

    def end_of_audio(self) -> None:
        """Every window of the file has been planned."""
        self._exhausted = True
        self._last_index = max((k.index for k in self._spans), default=None)

    def fail(self, error: WhisperctlError) -> None:
        """Reading the file, or decoding a batch with one of its windows, failed: it is finished, with ``error``, and
        nothing of it settles."""
        self.error = error
        self._exhausted = True

    def decoded(self, key: WindowKey, window: longform.Window, tokens: list[longform.TimedToken]) -> float:
        """Window ``key`` decoded to ``tokens`` (absolutely timed). Returns the audio seconds it newly covers
        (0 for a gap window: its audio was counted with the window it belongs to)."""
        self._tokens[key] = tokens
        self._pending -= 1
        if key.gap:
            return 0.0
        self._kept[key.index] = (window, tokens[-1].end if tokens else None)
        end = window.start + window.duration  # (with VAD windows, the skipped audio before it too)
        covered, self._reported = end - self._reported, end
        return covered

    def due_gaps(self) -> list[tuple[WindowKey, longform.Window]]:
        """Gap windows for audio the decoded windows left untranscribed, now planned (see the module docstring).
        A window's gap is decided once the next window is decoded (it is merged only after this decision)."""
        if self.error is not None:
            return []
        out: list[tuple[WindowKey, longform.Window]] = []
        for index in sorted(self._kept):
            last = self._exhausted and index == self._last_index
            if not last and WindowKey(index + 1) not in self._tokens:
                continue
            window, text_end = self._kept.pop(index)
            gap = self._gap_for(window, text_end, last) if self.windowing.gaps and text_end is not None else None
            if gap is not None:
                key = WindowKey(index, gap=True)
                self._add(key, gap)
                out.append((key, gap))
        return out

    def settle(self) -> Settled:
        """Merge the decoded windows whose turn has come; hand over the tokens no later window can change."""
        if self.error is not None:
            return Settled([], set())
        self._merge_ready()
        bound = float("inf") if self._all_merged else self._settled_before() - MERGE_SLACK_S
        n = 0
        while n < len(self._merged) and self._merged[n].end < bound:
            n += 1
        while 0 < n < len(self._merged) and self._merged[n].segment == self._merged[n - 1].segment:
            n -= 1  # never split a segment: its tail is not settled
        settled, self._merged = self._merged[:n], self._merged[n:]
        live = {t.segment[0] for t in self._merged}
        return Settled(settled, {t.segment[0] for t in settled} - live)

    def complete(self) -> tuple[list[longform.TimedToken], float]:
        """The finished file's unsettled tokens (normally none) and its duration in seconds."""
        rest, self._merged = self._merged, []
        return rest, max((s + d for s, d in self._spans.values()), default=0.0)

    @property
    def finished(self) -> bool:
        """Failed, or every window planned and decoded."""
        return self.error is not None or (self._exhausted and self._pending == 0)

    # -------------------------------------------------------------- internals
    def _add(self, key: WindowKey, window: longform.Window) -> None:
        self._spans[key] = (window.start, window.duration)
        self._pending += 1

    @property
    def _all_merged(self) -> bool:
        return self._exhausted and self._pending == 0 and not self._kept

    def _gap_for(self, a: longform.Window, end: float, last: bool) -> longform.Window | None:
        if last or self.windowing.independent:
            # A VAD window ends a pad after its last speech: text stopping well before that left words out.
            tail = self.windowing.vad_tail_s if self.windowing.independent else LAST_TAIL_S
            if not end < a.start + a.duration - tail:
                return None
            stop = a.start + a.duration
        else:
            b_start, b_dur = self._spans[WindowKey(a.index + 1)]
            if not end < b_start - SEAM_GAP_S:
                return None
            stop = min(end + self.windowing.chunk_length_s, b_start + b_dur)
        samples = self._audio_between(a, end, stop)
        if len(samples) < SAMPLE_RATE // 10:
            return None
        return longform.Window(a.index, end, samples)

    def _audio_between(self, a: longform.Window, start: float, stop: float) -> np.ndarray:
        """Samples of [start, stop) from window ``a`` and, when needed, the (kept) next window."""
        sr = SAMPLE_RATE
        parts = [a.samples[int(round((start - a.start) * sr)) :]]
        covered = a.start + a.duration
        nxt = self._kept.get(a.index + 1, (None, None))[0]
        if stop > covered and nxt is not None:
            parts.append(nxt.samples[int(round((covered - nxt.start) * sr)) :])
        return np.concatenate(parts)[: int(round((stop - start) * sr))]

    def _merge_ready(self) -> None:
        """Merge windows in key order while the next one is decoded and its gap decision made."""
        while True:
            key = self._next_key
            if key.gap and key.index in self._kept:
                break  # the gap decision for this window is still to come
            if key in self._spans or not key.gap:
                if key not in self._tokens:
                    break  # not decoded yet (or past the last window)
                self._merge(key)
            self._next_key = WindowKey(key.index + 1) if key.gap else WindowKey(key.index, gap=True)

    def _merge(self, key: WindowKey) -> None:
        start, dur = self._spans[key]
        tokens = self._tokens.pop(key)
        self._merged = list(tokens) if self._prev_end is None else longform.merge(self._merged, tokens, start, self._prev_end)
        self._prev_end = start + dur

    def _settled_before(self) -> float:
        """A time before which no window still to be merged (known, pending gap or not yet read) starts."""
        starts = [s for k, (s, _) in self._spans.items() if not k < self._next_key]
        starts += [end for _, end in self._kept.values() if end is not None]  # where a gap window would start
        if not self._exhausted:
            last = max((k.index for k in self._spans), default=-1)
            if last < 0:
                starts.append(0.0)
            else:
                start, duration = self._spans[WindowKey(last)]
                w = self.windowing
                starts.append(start + (duration if w.independent else w.chunk_length_s - w.overlap_s))
        return min(starts) if starts else float("inf")
