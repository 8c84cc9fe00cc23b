"""Regions of a file's audio: the stream that is decoded, and the way back to the original times.

A region is a span of the original audio (samples). Two things choose regions: the VAD (:mod:`whisperctl.vad`,
speech found as the audio streams by) and ``--clip-timestamps`` (:class:`Clips`, given by the user). Either
way the audio outside the regions is never decoded, and every time in the result is a time of the original file:

- :class:`RegionsOnly`: the regions' audio joined into one stream of blocks for the usual windowing (batched or
  sequential), with a :class:`TimeMap` from times in that stream back to the original audio;
- :class:`RegionClamp`: for windows cut from the original audio (``--chunking vad``), times stay original and
  segment edges in a pause move to the speech beside it.

A *scan* is what finds the regions while the blocks stream: ``run(blocks)`` yields each block with the regions
it settled; ``growing`` is a region whose start is known and whose end is not yet; ``next_start()`` is the first
sample a region not yet found may need; ``found`` / ``samples`` / ``record()`` describe the file so far;
``gaps`` are the samples, in order, where one unit of speech ends and the next begins (the middle of a pause
between two speech regions, the VAD's cut inside a long one, a clip's start): where the sequential mode may
split a file into sections (:mod:`whisperctl.sections`).
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from typing import Any, Iterable, Iterator, Protocol, Sequence

import numpy as np

from .audio import SAMPLE_RATE


@dataclasses.dataclass(frozen=True)
class Region:
    start: int  # samples, original audio
    end: int


class Scan(Protocol):
    found: list[Region]
    samples: int
    growing: Region | None
    gaps: list[int]

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, list[Region]]]: ...

    def next_start(self) -> int: ...

    def record(self) -> dict: ...


def record(found: Sequence[Region], samples: int, by: str) -> dict:
    """What the JSON output records: who chose the regions, the regions kept (seconds), speech and audio totals,
    the share skipped."""
    kept = sum(r.end - r.start for r in found)
    return {
        "by": by,
        "regions": [[round(r.start / SAMPLE_RATE, 3), round(r.end / SAMPLE_RATE, 3)] for r in found],
        "speech_s": round(kept / SAMPLE_RATE, 3),
        "audio_s": round(samples / SAMPLE_RATE, 3),
        "skipped_share": round(1.0 - kept / samples, 4) if samples else 0.0,
    }


# ------------------------------------------------------------------------------------------ pure functions
def pad_and_join(regions: Iterable[Region], pad: int, total: int | None = None) -> list[Region]:
    """Widen each region by ``pad`` samples on both sides (within [0, total]) and join those that then overlap."""
    out: list[Region] = []
    for r in regions:
        start, end = max(0, r.start - pad), r.end + pad
        if total is not None:
            end = min(end, total)
        if out and start <= out[-1].end:
            out[-1] = Region(out[-1].start, max(out[-1].end, end))
        else:
            out.append(Region(start, end))
    return out


def merge_into_windows(regions: Sequence[Region], max_samples: int) -> list[Region]:
    """Consecutive regions joined while the span from the first start to the last end fits in ``max_samples``;
    a region longer than that on its own is split into equal parts (the detector's cut normally prevents it)."""
    out: list[Region] = []
    for r in regions:
        if out and r.end - out[-1].start <= max_samples:
            out[-1] = Region(out[-1].start, r.end)
            continue
        parts = max(1, -(-(r.end - r.start) // max_samples))
        edges = np.linspace(r.start, r.end, parts + 1).round().astype(int)
        out.extend(Region(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]))
    return out


# ------------------------------------------------------------------------------------------ time mapping
class TimeMap:
    """Maps times in the joined speech-only audio back to the original audio.

    ``add(region)`` appends a region of the original audio; a time t of the joined audio falls in the region
    whose joined span holds it, at the same distance from its start (a time past the end maps to the last
    region's end). Whisper's timestamps are a few hundred ms loose, so a segment can start in the padding at the
    end of one region while its words are in the next, and would then span the whole pause: :meth:`span` moves
    a start (end) that lies less than ``snap`` samples, and less than half the segment, before (after) a join to
    the other side of the pause.
    """

    def __init__(self, snap: int = 0):
        self._joined: list[int] = []  # start of each region in the joined audio, samples
        self._regions: list[Region] = []
        self._length = 0
        self._snap = snap

    def add(self, region: Region) -> None:
        if self._regions and self._regions[-1].end == region.start:  # a piece continuing the last region
            last = self._regions[-1]
            self._regions[-1] = Region(last.start, region.end)
        else:
            self._joined.append(self._length)
            self._regions.append(region)
        self._length += region.end - region.start

    @property
    def regions(self) -> list[Region]:
        return list(self._regions)

    @property
    def length(self) -> int:
        """Samples of joined audio mapped so far."""
        return self._length

    def _index(self, sample: float) -> int:
        return max(0, bisect.bisect_right(self._joined, sample) - 1)

    def to_joined(self, sample: int) -> int | None:
        """Where original ``sample`` lies in the joined audio; a sample in a pause that was left out maps to the
        start of the region after it (None while that region is not mapped yet)."""
        i = bisect.bisect_right(self._regions, sample, key=_start) - 1
        if i >= 0 and sample < self._regions[i].end:
            return self._joined[i] + sample - self._regions[i].start
        return self._joined[i + 1] if i + 1 < len(self._regions) else None

    def __call__(self, seconds: float) -> float:
        if not self._regions:
            return seconds
        sample = round(seconds * SAMPLE_RATE)  # (a time computed as offset + seconds may fall a hair short)
        i = self._index(sample)
        region = self._regions[i]
        return min(region.start + (sample - self._joined[i]), region.end) / SAMPLE_RATE

    def span(self, start: float, end: float) -> tuple[float, float]:
        """(start, end) of a segment or word, mapped, without a sliver on the far side of a pause."""
        if not self._regions:
            return start, end
        a, b = round(start * SAMPLE_RATE), round(end * SAMPLE_RATE)
        i, j = self._index(a), self._index(max(a, b - 1))
        if j > i:
            before = self._joined[i + 1] - a  # joined samples before the first join
            after = b - self._joined[j]  # and after the last
            if before < min(self._snap, (b - a) / 2):
                a = self._joined[i + 1]
            elif after < min(self._snap, (b - a) / 2):
                return self(a / SAMPLE_RATE), self._regions[j - 1].end / SAMPLE_RATE
        mapped_start = self(a / SAMPLE_RATE)
        return mapped_start, max(self(b / SAMPLE_RATE), mapped_start)


class RegionClamp:
    """``--chunking vad``'s :meth:`span`: times stay original, but a segment's start in a pause inside a window
    moves to the next region's start and its end to the previous region's end (Whisper stretches a segment's
    timestamps over the silence after it)."""

    def __init__(self, regions: list[Region]):
        self._regions = regions  # the detector's settled regions, growing as the stream is read

    def span(self, start: float, end: float) -> tuple[float, float]:
        regions = self._regions
        a, b = start * SAMPLE_RATE, end * SAMPLE_RATE
        i = bisect.bisect_right(regions, a, key=_start) - 1
        if (i < 0 or a > regions[i].end) and i + 1 < len(regions) and regions[i + 1].start < b:
            a = regions[i + 1].start
        j = bisect.bisect_right(regions, b, key=_start) - 1
        if j >= 0 and b > regions[j].end and regions[j].end > a:
            b = regions[j].end
        return a / SAMPLE_RATE, max(a, b) / SAMPLE_RATE


def _start(region: Region) -> int:
    return region.start


# ------------------------------------------------------------------------------------------------- streams
class Tape:
    """The recent audio of a stream with its absolute position, so regions can be cut out of it once known."""

    def __init__(self):
        self.start = 0  # absolute sample of data[0]
        self.data = np.zeros(0, dtype=np.float32)

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def append(self, block: np.ndarray) -> None:
        self.data = np.concatenate([self.data, block]) if len(self.data) else np.asarray(block, dtype=np.float32)

    def take(self, start: int, end: int) -> np.ndarray:
        return self.data[max(0, start - self.start): max(0, end - self.start)].copy()

    def drop_before(self, sample: int) -> None:
        sample = min(sample, self.end)  # (a region not yet read may be due later: keep the position)
        if sample > self.start:
            self.data = self.data[sample - self.start:]
            self.start = sample


class SpeechStream(Protocol):
    """What a runner reads for one input, and what its transcript needs to know about it: the blocks of 16 kHz
    samples to decode (``--chunking vad``: the windows), ``time_map`` (``span``: times in the stream → the file's;
    None: they are the file's), ``duration`` (the file's, once iterated), ``record()`` (the regions kept; None:
    every sample) and ``cut_points()`` (samples of the stream where it may be cut into sections, as far as known
    yet; None: no pauses are known, it is read whole)."""

    time_map: Any

    def __iter__(self) -> Iterator[Any]: ...

    @property
    def duration(self) -> float: ...

    def record(self) -> dict | None: ...

    def cut_points(self) -> list[int] | None: ...


class WholeStream:
    """Every sample of the input (``--vad none``, arrays): nothing left out, nothing to map, no pauses known."""

    time_map = None

    def __init__(self, blocks: Iterable[np.ndarray]):
        self._blocks = blocks
        self._samples = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        for block in self._blocks:
            self._samples += len(block)
            yield block

    @property
    def duration(self) -> float:
        return self._samples / SAMPLE_RATE

    def record(self) -> None:
        return None

    def cut_points(self) -> None:
        return None


class RegionStream:
    """A stream cut to regions (a :class:`SpeechStream`): ``time_map.span`` (segment times → original times),
    ``duration`` (the file's, once iterated) and ``record()`` (the regions kept)."""

    _scan: "Scan"
    time_map: "TimeMap | RegionClamp"

    @property
    def duration(self) -> float:
        return self._scan.samples / SAMPLE_RATE

    def record(self) -> dict:
        return self._scan.record()

    def cut_points(self) -> list[int] | None:
        return None  # windows cut at pauses already (--chunking vad): nothing to cut further


class RegionsOnly(RegionStream):
    """The regions' audio as one stream of blocks, and ``time_map`` from times in that stream to the original
    audio. A region's audio is passed on as soon as it is certain (a growing region's as it is read), so memory
    stays flat."""

    def __init__(self, blocks: Iterable[np.ndarray], scan: Scan, snap: int):
        self._blocks = blocks
        self._scan = scan
        self.time_map = TimeMap(snap=snap)
        self._cuts: list[int] = []  # the scan's gaps mapped so far, ascending
        self._gaps_mapped = 0

    def cut_points(self) -> list[int]:
        """The scan's gaps found so far as samples of the joined stream (ascending; those not mapped yet left out).
        Gaps come in order and the time map only grows, so each gap is mapped once."""
        gaps = self._scan.gaps
        while self._gaps_mapped < len(gaps):
            cut = self.time_map.to_joined(gaps[self._gaps_mapped])
            if cut is None:  # its region is not mapped yet, nor are the later gaps'
                break
            if cut > (self._cuts[-1] if self._cuts else 0):
                self._cuts.append(cut)
            self._gaps_mapped += 1
        return self._cuts

    def __iter__(self) -> Iterator[np.ndarray]:
        tape, scan = Tape(), self._scan
        sent = 0  # original samples before this are passed on (or skipped)
        for block, settled in scan.run(self._blocks):
            tape.append(block)
            certain = settled + ([scan.growing] if scan.growing is not None else [])
            for region in certain:
                end = min(region.end, tape.end)  # a pad may reach past what has been read
                if end > max(region.start, sent):
                    piece = Region(max(region.start, sent), end)
                    self.time_map.add(piece)
                    sent = piece.end
                    yield tape.take(piece.start, piece.end)
            unsent = sent if scan.growing is not None and scan.growing.end > sent else scan.next_start()
            tape.drop_before(min(scan.next_start(), unsent))


# ---------------------------------------------------------------------------------------------------- clips
class Clips:
    """The scan of ``--clip-timestamps`` (openai-whisper's): fixed ``(start, end)`` spans in seconds, ascending and
    apart; an end of ``math.inf`` runs to the end of the file. Clips past the end of the file are empty: said once
    as a warning naming ``name`` and its duration (openai-whisper says nothing, and the transcript comes out empty)."""

    def __init__(self, spans: Sequence[tuple[float, float]], name: str = "<audio>"):
        self.name = name
        self._clips = [Region(int(round(a * SAMPLE_RATE)), math.inf if math.isinf(b) else int(round(b * SAMPLE_RATE)))
                       for a, b in spans]  # type: ignore[arg-type]
        self._next = 0  # the first clip not yet settled
        self.gaps = [clip.start for clip in self._clips[1:]]
        self.found: list[Region] = []
        self.samples = 0
        self.growing: Region | None = None

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, list[Region]]]:
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            self.samples += len(block)
            yield block, self._settle(final=False)
        yield np.zeros(0, np.float32), self._settle(final=True)

    def _settle(self, final: bool) -> list[Region]:
        out = []
        beyond = []
        while self._next < len(self._clips) and (final or self._clips[self._next].end <= self.samples):
            clip = self._clips[self._next]
            if clip.start < self.samples:
                out.append(Region(clip.start, min(clip.end, self.samples)))
            else:
                beyond.append(clip)
            self._next += 1
        if beyond:
            self._warn_beyond_end(beyond, none_left=not self.found and not out)
        clip = self._clips[self._next] if self._next < len(self._clips) else None
        self.growing = clip if clip is not None and clip.start < self.samples else None
        self.found.extend(out)
        return out

    def _warn_beyond_end(self, clips: list[Region], none_left: bool) -> None:
        import logging

        spans = ", ".join(f"{c.start / SAMPLE_RATE:g} s–end" if math.isinf(c.end)
                          else f"{c.start / SAMPLE_RATE:g}–{c.end / SAMPLE_RATE:g} s" for c in clips)
        one = len(clips) == 1
        logging.getLogger("whisperctl").warning(
            "%s: --clip-timestamps %s %s past the end of the file (%.2f s long)%s.", self.name, spans,
            "starts" if one else "start", self.samples / SAMPLE_RATE,
            "; no clip holds audio, so the transcript is empty" if none_left
            else f"; {'it holds' if one else 'they hold'} no audio")

    def next_start(self) -> int:
        """Inside a clip, what has been read of it is passed on already: nothing before the current position is
        needed again; between clips, the next clip's start."""
        if self.growing is not None or self._next >= len(self._clips):
            return self.samples
        return min(self._clips[self._next].start, self.samples)

    def record(self) -> dict:
        return record(self.found, self.samples, by="clip_timestamps")


def clips_only(blocks: Iterable[np.ndarray], spans: Sequence[tuple[float, float]], name: str = "<audio>") -> RegionsOnly:
    """``--clip-timestamps``: the clips' audio, joined, with times mapped back (a segment's edge less than
    0.5 s past a join, Whisper's timestamp slack, moves to the other side of it). ``name`` is the input's, for the
    warning about clips past its end."""
    return RegionsOnly(blocks, Clips(spans, name), snap=SAMPLE_RATE // 2)
