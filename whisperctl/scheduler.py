"""Batched chunking: overlapping windows of many files decoded together, merged at the seams, streamed.

Files are read block by block and cut into windows (:func:`whisperctl.longform.windows`); windows of
consecutive files share batches of ``batch_size``. Each file's windows are merged in order as soon as their
neighbours are decoded, and segments are emitted once no later window can change them: memory holds a few
windows per file, whatever the audio's length.

A window's single decoding pass ends at its last complete segment, so its tail may stay untranscribed; when
that tail reaches past the start of the next window, a *gap window* starting where the transcription stopped
covers it (the batched counterpart of openai-whisper's seeking). Gap windows are keyed
``WindowKey(index, gap=True)`` and sort between window ``index`` and ``index + 1``.

With ``--chunking vad`` the windows come from :class:`whisperctl.vad.SpeechWindows` instead: they do not
overlap (the audio between them is skipped), so they are joined without a seam search, and a window whose
text stops two seconds or more before its end gets a gap window for the rest of it.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import audio as audio_mod, longform
from .config import Chunking, DecodeOptions
from .decoding import WindowDecoder
from .errors import WhisperctlError
from .transcript import Event, FileDone, SegmentReady, TranscriptBuilder, window_tokens

ProgressFn = Callable[[str, float], None]  # (input name, seconds of audio just finished)
MERGE_SLACK_S = 1.5  # how far before a seam merging may still change tokens (longform.merge's slack)


@dataclasses.dataclass(frozen=True, order=True)
class WindowKey:
    index: int
    gap: bool = False  # covers audio window ``index`` left untranscribed before window ``index + 1``


@dataclasses.dataclass
class _File:
    source: audio_mod.AudioInput
    blocks: Iterable[np.ndarray]
    builder: TranscriptBuilder
    spans: dict[WindowKey, tuple[float, float]] = dataclasses.field(default_factory=dict)  # key -> (start, dur)
    tokens: dict[WindowKey, list[longform.TimedToken]] = dataclasses.field(default_factory=dict)  # decoded, not merged
    # decoded windows whose gap decision is pending, with the end of their text (None: no text)
    kept: dict[int, tuple[longform.Window, float | None]] = dataclasses.field(default_factory=dict)
    last_index: int | None = None
    pending: int = 0
    exhausted: bool = False
    error: WhisperctlError | None = None
    merged: list[longform.TimedToken] = dataclasses.field(default_factory=list)  # merged, not yet built
    next_key: WindowKey = WindowKey(0)
    prev_end: float | None = None  # end of the last merged window
    reported: float = 0.0  # audio seconds passed to the progress callback

    @property
    def finished(self) -> bool:
        return self.error is not None or (self.exhausted and self.pending == 0)


class BatchedScheduler:
    def __init__(self, decoder: WindowDecoder, options: DecodeOptions, finish: Callable[[TranscriptBuilder, float], Any],
                 new_builder: Callable[[audio_mod.AudioInput, Any], TranscriptBuilder], progress: ProgressFn | None = None):
        self.decoder, self.options, self.progress = decoder, options, progress
        self._finish, self._new_builder = finish, new_builder
        lm = decoder.loaded
        self.loaded = lm
        self.prompt = lm.text_tokens(options.initial_prompt) if options.initial_prompt else []
        self.gaps = not lm.random_weights
        self.independent = options.chunking == Chunking.VAD  # windows from the VAD: no overlap, no seams
        self.tail_s = options.speech_pad_ms / 1000 + 0.3  # untranscribed end of a VAD window worth a gap window

    def run(self, inputs: list[tuple[audio_mod.AudioInput, Iterable[np.ndarray]]]) -> Iterator[Event]:
        """Events in input order per file: its segments as they settle, then its FileDone."""
        opts = self.options
        files = [_File(inp, blocks, self._new_builder(inp, blocks)) for inp, blocks in inputs]
        batch: list[tuple[_File, WindowKey, longform.Window]] = []
        current = 0  # the file whose events are being emitted

        def emit() -> Iterator[Event]:
            nonlocal current
            while current < len(files):
                f = files[current]
                yield from self._settle(f)
                if not f.finished:
                    return
                if f.error:
                    yield FileDone(f.source, f.error)
                else:
                    yield from self._complete(f)
                current += 1

        def decode_while(waiting: int) -> Iterator[Event]:
            """Decode batches while at least ``waiting`` windows wait (gap windows join the queue)."""
            nonlocal batch
            while batch and len(batch) >= waiting:
                head, batch = batch[: opts.batch_size], batch[opts.batch_size :]
                batch += self._run_batch(head)
                yield from emit()

        for f in files:
            try:
                windows = f.blocks if self.independent else longform.windows(f.blocks, opts.chunk_length_s, opts.overlap_s)
                for window in windows:
                    key = WindowKey(window.index)
                    f.spans[key] = (window.start, window.duration)
                    f.pending += 1
                    batch.append((f, key, window))
                    yield from decode_while(opts.batch_size)
                f.last_index = max((k.index for k in f.spans), default=None)
            except WhisperctlError as exc:
                f.error = exc
                batch = [item for item in batch if item[0] is not f]
            f.exhausted = True
            batch += self._gap_windows([f])
            yield from emit()
        yield from decode_while(1)
        yield from emit()

    # --------------------------------------------------------------- decoding
    def _run_batch(self, items: list[tuple[_File, WindowKey, longform.Window]]) -> list[tuple[_File, WindowKey, longform.Window]]:
        t0 = time.perf_counter()
        results = self.decoder.decode(
            [w.samples for _, _, w in items], [f.builder.language for f, _, _ in items], [self.prompt] * len(items),
            [id(f) for f, _, _ in items],
        )
        decode_share = (time.perf_counter() - t0 - sum(r.align_s for r in results)) / len(items)
        for (f, key, window), result in zip(items, results):
            f.builder.window_decoded(key, result, decode_share)
            timed = window_tokens(self.loaded, key, result.tokens, window.start, window.duration, result.token_times)
            f.tokens[key] = timed
            if not key.gap:
                f.kept[key.index] = (window, timed[-1].end if timed else None)
            f.pending -= 1
            if self.progress and not key.gap:  # gap windows re-cover audio already counted
                end = window.start + window.duration  # (with --chunking vad, the skipped audio before it too)
                self.progress(f.source.name, end - f.reported)
                f.reported = end
        return self._gap_windows({id(f): f for f, _, _ in items}.values())

    def _gap_windows(self, files: Iterable[_File]) -> list[tuple[_File, WindowKey, longform.Window]]:
        """Gap windows for audio a decoded window left untranscribed (see the module docstring)."""
        out: list[tuple[_File, WindowKey, longform.Window]] = []
        for f in files:
            for index in sorted(f.kept):
                last = f.exhausted and index == f.last_index
                if not last and WindowKey(index + 1) not in f.tokens:
                    continue  # decided once the next window is decoded (it is merged only after this decision)
                a, text_end = f.kept.pop(index)
                gap = self._gap_for(f, a, text_end, last) if self.gaps and text_end is not None else None
                if gap is not None:
                    key = WindowKey(index, gap=True)
                    f.spans[key] = (gap.start, gap.duration)
                    f.pending += 1
                    out.append((f, key, gap))
        return out

    def _gap_for(self, f: _File, a: longform.Window, end: float, last: bool) -> longform.Window | None:
        if last or self.independent:
            # A VAD window ends a pad after its last speech: text stopping well before that left words out.
            tail = self.tail_s if self.independent else 2.0
            if not end < a.start + a.duration - tail:
                return None
            stop = a.start + a.duration
        else:
            b_start, b_dur = f.spans[WindowKey(a.index + 1)]
            if not end < b_start - 0.2:
                return None
            stop = min(end + self.options.chunk_length_s, b_start + b_dur)
        samples = self._audio_between(f, a, end, stop)
        if len(samples) < audio_mod.SAMPLE_RATE // 10:
            return None
        return longform.Window(a.index, end, samples)

    @staticmethod
    def _audio_between(f: _File, a: longform.Window, start: float, stop: float) -> np.ndarray:
        """Samples of [start, stop) from window ``a`` and, when needed, the (kept) next window."""
        sr = audio_mod.SAMPLE_RATE
        parts = [a.samples[int(round((start - a.start) * sr)) :]]
        covered = a.start + a.duration
        nxt = f.kept.get(a.index + 1, (None, None))[0]
        if stop > covered and nxt is not None:
            parts.append(nxt.samples[int(round((covered - nxt.start) * sr)) :])
        return np.concatenate(parts)[: int(round((stop - start) * sr))]

    # ---------------------------------------------------------------- merging
    def _settle(self, f: _File) -> Iterator[Event]:
        """Merge the windows whose turn has come; emit the segments no later window can change."""
        if f.error is not None:
            return
        while True:
            key = f.next_key
            if key.gap and key.index in f.kept:
                break  # the gap decision for this window is still to come
            if key in f.spans or not key.gap:
                if key not in f.tokens:
                    break  # not decoded yet (or past the last window)
                self._merge(f, key)
            f.next_key = WindowKey(key.index + 1) if key.gap else WindowKey(key.index, gap=True)
        done = f.exhausted and f.pending == 0 and not f.kept
        bound = float("inf") if done else self._settled_before(f) - MERGE_SLACK_S
        n = 0
        while n < len(f.merged) and f.merged[n].end < bound:
            n += 1
        while 0 < n < len(f.merged) and f.merged[n].segment == f.merged[n - 1].segment:
            n -= 1  # never split a segment: its tail is not settled
        if n == 0:
            return
        settled, f.merged = f.merged[:n], f.merged[n:]
        for seg in f.builder.add(settled):
            yield SegmentReady(f.source, seg)
        live = {t.segment[0] for t in f.merged}
        f.builder.forget({t.segment[0] for t in settled} - live)

    def _merge(self, f: _File, key: WindowKey) -> None:
        start, dur = f.spans[key]
        tokens = f.tokens.pop(key)
        f.merged = list(tokens) if f.prev_end is None else longform.merge(f.merged, tokens, start, f.prev_end)
        f.prev_end = start + dur

    def _settled_before(self, f: _File) -> float:
        """A time before which no window still to be merged (known, pending gap or not yet read) starts."""
        starts = [s for k, (s, _) in f.spans.items() if not k < f.next_key]
        starts += [end for _, end in f.kept.values() if end is not None]  # where a gap window would start
        if not f.exhausted:
            last = max((k.index for k in f.spans), default=-1)
            if last < 0:
                starts.append(0.0)
            else:
                start, duration = f.spans[WindowKey(last)]
                step = duration if self.independent else self.options.chunk_length_s - self.options.overlap_s
                starts.append(start + step)
        return min(starts) if starts else float("inf")

    def _complete(self, f: _File) -> Iterator[Event]:
        """The file's last segments (held back by the builder, or unsettled: normally none), then its FileDone."""
        duration = max((s + d for s, d in f.spans.values()), default=0.0)
        last = f.builder.add(f.merged, duration) + f.builder.close(duration)
        f.merged = []
        for segment in last:
            yield SegmentReady(f.source, segment)
        yield FileDone(f.source, self._finish(f.builder, duration))
