"""Batched chunking: overlapping windows of many files decoded together, merged at the seams, streamed.

Files are read block by block and cut into windows (:func:`whisperctl.longform.windows`, or with
``--chunking vad`` :class:`whisperctl.vad.SpeechWindows`); windows of consecutive files share batches of
``batch_size``. What happens to each file's windows once decoded (gap windows, merging at the seams, which
tokens have settled) is :class:`whisperctl.filewindows.FileWindows`; this module only schedules: it fills
batches, decodes them, and turns each file's settled tokens into events, file after file. Memory holds a few
windows per file, whatever the audio's length.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from . import longform
from .config import Chunking
from .errors import WhisperctlError
from .inputs import AudioInput
from .filewindows import FileWindows, WindowKey, Windowing
from .regions import SpeechStream
from .runners import Intake, RunContext
from .transcript import Event, FileDone, SegmentReady, TranscriptBuilder, window_tokens

ProgressFn = Callable[[str, float], None]  # (input name, seconds of audio just finished)


@dataclasses.dataclass(frozen=True)
class _Input:
    source: AudioInput
    blocks: Iterable[np.ndarray]
    builder: TranscriptBuilder
    windows: FileWindows


Item = tuple[_Input, WindowKey, longform.Window]  # a window waiting in the batch queue


class BatchedScheduler:
    """The batched runner (a :class:`~whisperctl.runners.Runner`)."""

    def __init__(self, context: RunContext):
        self.decoder, self.options, self.progress = context.decoder, context.options, context.progress
        self._finish, self._new_builder = context.finish, context.new_builder
        self._prompt_for, self._call = context.prompt_for, context.call
        options = self.options
        lm = self.decoder.loaded
        self.loaded = lm
        self.prompt = lm.text_tokens(options.initial_prompt) if options.initial_prompt else []
        self.windowing = Windowing(
            options.chunk_length_s, options.overlap_s,
            independent=options.chunking == Chunking.VAD,  # windows from the VAD: no overlap, no seams
            gaps=not lm.random_weights,
            vad_tail_s=options.vad_params[2] / 1000 + 0.3,  # a VAD window ends a pad after its last speech
        )

    def run(self, inputs: Intake | list[tuple[AudioInput, SpeechStream]]) -> Iterator[Event]:
        """Events in input order per file: its segments as they settle, then its FileDone. A live intake is not
        read here (the server runs batched chunking one request at a time)."""
        opts = self.options
        if isinstance(inputs, Intake):
            if inputs.live:
                raise ValueError("batched chunking reads a fixed list of inputs, not a live intake")
            inputs = list(iter(inputs.take, None))
        files = [_Input(inp, blocks, self._new_builder(inp, blocks), FileWindows(self.windowing)) for inp, blocks in inputs]
        batch: list[Item] = []
        current = 0  # the file whose events are being emitted

        def emit() -> Iterator[Event]:
            nonlocal current
            while current < len(files):
                yield from self._settle(files[current])
                if not files[current].windows.finished:
                    return
                yield from self._complete(files[current])
                current += 1

        def fail(failed: list[_Input], exc: WhisperctlError) -> None:
            nonlocal batch
            for f in failed:
                if f.windows.error is None:
                    f.windows.fail(exc)
            batch = [item for item in batch if item[0].windows.error is None]

        def decode_while(waiting: int) -> Iterator[Event]:
            """Decode batches while at least ``waiting`` windows wait (gap windows join the queue). A batch that
            fails fails every input with a window in it (the others go on)."""
            nonlocal batch
            while batch and len(batch) >= waiting:
                head, batch = batch[: opts.batch_size], batch[opts.batch_size :]
                try:
                    batch += self._run_batch(head)
                except WhisperctlError as exc:
                    fail(list({id(f): f for f, _, _ in head}.values()), exc)
                yield from emit()

        for f in files:
            try:
                independent = self.windowing.independent
                windows = f.blocks if independent else longform.windows(f.blocks, opts.chunk_length_s, opts.overlap_s)
                for window in windows:
                    if f.windows.error is not None:  # a batch with its windows failed: stop reading it
                        break
                    batch.append((f, f.windows.plan(window), window))
                    yield from decode_while(opts.batch_size)
                f.windows.end_of_audio()
            except WhisperctlError as exc:  # reading the input failed
                fail([f], exc)
            batch += [(f, key, gap) for key, gap in f.windows.due_gaps()]
            yield from emit()
        yield from decode_while(1)
        yield from emit()

    def _run_batch(self, items: list[Item]) -> list[Item]:
        """Decode ``items`` together; returns the gap windows their results call for."""
        def work() -> tuple[list, float]:
            t0 = time.perf_counter()
            found = self.decoder.decode(
                [w.samples for _, _, w in items], [f.builder.language for f, _, _ in items],
                [self._prompt_of(f.source) for f, _, _ in items], [id(f) for f, _, _ in items],
            )
            return found, time.perf_counter() - t0

        results, seconds = self._call(work)
        decode_share = (seconds - sum(r.align_s for r in results)) / len(items)
        for (f, key, window), result in zip(items, results):
            f.builder.window_decoded(key, result, decode_share)
            timed = window_tokens(self.loaded, key, result.tokens, window.start, window.duration, result.token_times)
            covered = f.windows.decoded(key, window, timed)
            if self.progress and not key.gap:  # gap windows re-cover audio already counted
                self.progress(f.source.name, covered)
        touched = {id(f): f for f, _, _ in items}.values()
        return [(f, key, gap) for f in touched for key, gap in f.windows.due_gaps()]

    def _prompt_of(self, source: AudioInput) -> list[int]:
        prompt = self._prompt_for(source) if self._prompt_for is not None else None
        return self.prompt if prompt is None else prompt

    @staticmethod
    def _settle(f: _Input) -> Iterator[Event]:
        """The file's segments no later window can change."""
        settled = f.windows.settle()
        if not settled.tokens:
            return
        for segment in f.builder.add(settled.tokens):
            yield SegmentReady(f.source, segment)
        f.builder.forget(settled.windows_done)

    def _complete(self, f: _Input) -> Iterator[Event]:
        """The file's last segments (held back by the builder, or unsettled: normally none), then its FileDone."""
        if f.windows.error is not None:
            yield FileDone(f.source, f.windows.error)
            return
        rest, duration = f.windows.complete()
        for segment in f.builder.add(rest, duration) + f.builder.close(duration):
            yield SegmentReady(f.source, segment)
        yield FileDone(f.source, self._finish(f.builder, duration))
