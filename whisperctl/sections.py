"""Sections: one long input cut at its pauses into parts that the sequential loop decodes side by side.

The seeking loop (:mod:`whisperctl.sequential`) is sequential within a stream: each window starts where the
previous one's text ended. A folder batches because its files are independent; one long file would run one
window at a time. :class:`Sections` cuts a file's speech stream (the VAD's, or the clips') at the first pause
after every ``min_s`` seconds (``--section-length``, 60 s by default: losing the previous text as a prompt then
touches one window in several, and a 4-minute file runs in 3 or 4 lanes), so each section runs its own seeking loop in the batch beside the others, as a
file of a folder does. A section starts at a pause (the middle of a silence between two speech regions, or the
VAD's cut at the least speech-like moment of a long region), so no window boundary falls inside speech and
nothing is merged at seams; what a section loses is the previous section's text as its first window's prompt,
as after any prompt reset.

A stream without pauses to cut at (``--vad none``: the whole file; its ``cut_points()`` is None) is one section,
read lazily as it is decoded.
Pure bookkeeping over blocks of samples: no model.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import numpy as np

from .audio import SAMPLE_RATE

if TYPE_CHECKING:
    from .regions import SpeechStream


@dataclasses.dataclass
class Section:
    index: int  # 0, 1, … in the input's order
    offset: int  # where the section starts in the stream, samples
    blocks: Iterable[np.ndarray]


class Sections:
    """Cuts ``stream`` (a :class:`~whisperctl.regions.SpeechStream`) into :class:`Section` s of at least ``min_s``
    seconds each (the last may be shorter), at the pauses its ``cut_points()`` knows; ``min_s`` 0 or a stream that
    knows no pauses (``cut_points()`` None) gives one section, the stream itself."""

    def __init__(self, stream: "SpeechStream", min_s: float):
        self._stream = stream
        self._blocks: Iterator[np.ndarray] = iter(stream)
        cuttable = min_s > 0 and stream.cut_points() is not None
        self._cut_points: Callable[[], list[int] | None] | None = stream.cut_points if cuttable else None
        self._min = int(min_s * SAMPLE_RATE)
        self._held: list[np.ndarray] = []  # blocks read after ``_start``
        self._read = 0  # samples read from the stream
        self._start = 0  # where the next section starts
        self._exhausted = False
        self._count = 0

    @property
    def exhausted(self) -> bool:
        """Every section has been handed out."""
        return self._exhausted and not self._held

    def next(self) -> Section | None:
        """The next section, or None once the stream is consumed. Reads the stream up to the section's end (and
        to the pause that ends it); errors reading the stream propagate."""
        if self._cut_points is None:
            if self._exhausted:
                return None
            self._exhausted = True
            return self._section(0, self._stream)
        while True:
            cut = self._next_cut()
            if cut is not None:
                return self._section(self._start, self._take(cut))
            if self._exhausted:
                if not self._held:
                    return None
                return self._section(self._start, self._take(self._read))
            block = next(self._blocks, None)
            if block is None:
                self._exhausted = True
            elif len(block):
                self._held.append(np.asarray(block, np.float32))
                self._read += len(block)

    def _section(self, offset: int, blocks: Iterable[np.ndarray]) -> Section:
        self._count += 1
        return Section(self._count - 1, offset, blocks)

    def _next_cut(self) -> int | None:
        assert self._cut_points is not None
        cuts = self._cut_points() or []
        i = bisect.bisect_left(cuts, self._start + self._min)
        return cuts[i] if i < len(cuts) and cuts[i] < self._read else None

    def _take(self, end: int) -> list[np.ndarray]:
        """The held audio before stream sample ``end``; the rest stays held for the next section."""
        joined = np.concatenate(self._held) if len(self._held) > 1 else self._held[0]
        cut = end - self._start
        head, rest = joined[:cut], joined[cut:]
        self._held = [rest] if len(rest) else []
        self._start = end
        return [head]
