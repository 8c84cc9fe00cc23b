"""Sequential chunking: openai-whisper's seeking loop, run for many inputs in lock-step.

Each window starts where the previous one's last complete segment ended; a window that ends in the middle of
a segment is decoded again from that segment's start. With ``condition_on_previous_text`` each window is
prompted with the text before it (reset after a window that needed a temperature above 0.5, as
openai-whisper does). This is the loop faster-whisper and openai-whisper run, and no window boundary falls
inside a word: nothing is merged at seams.

A stream's next window depends on its previous one, so one stream cannot be batched with itself; independent
streams can. A *lane* is an input, or a section of a long one: :mod:`whisperctl.sections` cuts a file's speech
at its first pause after every minute of speech (with the VAD or clip timestamps; ``--vad none`` keeps the file
whole). Up to ``batch_size`` lanes are live at once, and each batch holds the next window of each live lane
(:class:`Seeker` keeps one lane's loop state, :class:`~whisperctl.lanes.LaneBook` which lanes run and where their
text goes; prompts of different lengths share the batch): a folder of clips and a two-hour file both decode
``batch_size`` windows at a time, with the same windows, prompts and rules in each lane as one file at a time.
A section's first window is not prompted with the previous section's text.
Events come out input after input, a file's sections in order: the first input's segments stream as they
settle, the others' wait until it is done. An input in which no speech is found takes no lane and is reported as
soon as it has been read; while lanes are live, one such input is read per batch (a folder of noise neither
delays the first output nor the live lanes). Decoding goes through the same
:class:`~whisperctl.decoding.WindowDecoder` as the batched mode, so the same fallback and silence rules apply.
The audio is read as a stream: memory holds one window and one block per live lane of an unsectioned stream,
and a section's audio (a minute and a half at most) per live section.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Iterator

import numpy as np

from . import audio as audio_mod, longform
from .decoding import WindowResult
from .errors import WhisperctlError
from .inputs import AudioInput
from .lanes import Lane, LaneBook
from .regions import SpeechStream
from .runners import Cancelled, Intake, RunContext
from .sections import Sections
from .transcript import Event, Resume, window_tokens

WINDOW_S = 30.0
PROMPT_RESET_TEMPERATURE = 0.5  # openai-whisper: a window decoded hotter than this does not prompt the next
PROMPT_TOKENS_KEPT = 224  # a resume point keeps this much of the prompt (a window's prompt holds at most 223)


def split_at_last_segment(tokens: list[int], timestamp_begin: int, window_s: float) -> tuple[list[int], float]:
    """(tokens to keep, seconds to advance) for one window, as openai-whisper seeks.

    A window whose text ends with a closed segment followed by an unfinished one keeps the closed segments
    and advances to the last closing timestamp; otherwise (one trailing timestamp, or no timestamp pair) the
    whole window is consumed.
    """
    is_ts = [t >= timestamp_begin for t in tokens]
    pairs = [i for i in range(1, len(tokens)) if is_ts[i] and is_ts[i - 1]]
    single_ending = len(tokens) >= 2 and not is_ts[-2] and is_ts[-1]
    if pairs and not single_ending:
        cut = pairs[-1]
        advance = (tokens[cut - 1] - timestamp_begin) * longform.TIME_PRECISION
        if advance > 0:
            return tokens[:cut], min(advance, window_s)
    return tokens, window_s


class Seeker:
    """One input's seeking state: where its next window starts, and the text that prompts it.

    Pure bookkeeping over the input's audio blocks and the decoded windows' tokens (no model): :meth:`window`
    gives the next window's audio (None once the input is consumed), :meth:`advance` takes that window's
    decode and returns the tokens it keeps, with their window's start and duration."""

    def __init__(self, blocks: Iterable[np.ndarray], prompt: list[int], condition_on_previous_text: bool,
                 timestamp_begin: int, window_s: float = WINDOW_S, resume: tuple[int, int, list[int]] | None = None):
        self._stream = iter(blocks)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # absolute sample index of _buffer[0]
        self._exhausted = False
        self._prompt, self._condition = list(prompt), condition_on_previous_text
        self._history: list[int] = list(prompt)
        self._reset_at = 0
        self._timestamp_begin = timestamp_begin
        self._size = int(window_s * audio_mod.SAMPLE_RATE)
        self.seek = 0  # sample where the next window starts
        self.key = 0  # index of the next window
        self.duration = 0.0  # seconds of audio read so far (the input's duration once window() returned None)
        if resume is not None:  # (seek, window, history): go on where an interrupted run stood (see state)
            self.seek, self.key, self._history = resume[0], resume[1], list(resume[2])

    def state(self) -> tuple[int, int, list[int]]:
        """(seek, next window's index, the prompt it would get): what :meth:`__init__`'s ``resume`` takes to give
        the same windows and prompts from here on."""
        history = self.conditioning if self._condition else []
        return self.seek, self.key, history[-PROMPT_TOKENS_KEPT:]

    def window(self) -> np.ndarray | None:
        """The next window's samples (up to 30 s from ``seek``), or None when no audio is left."""
        sr = audio_mod.SAMPLE_RATE
        while not self._exhausted and self._buffer_start + len(self._buffer) < self.seek + self._size:
            block = next(self._stream, None)
            if block is None:
                self._exhausted = True
            else:
                block = np.asarray(block, np.float32)
                end = self._buffer_start + len(self._buffer) + len(block)
                if not len(self._buffer) and end <= self.seek:  # wholly before the next window (a resumed run
                    self._buffer_start = end  # goes on far into the stream): read past, never held
                    continue
                self._buffer = np.concatenate([self._buffer, block]) if len(self._buffer) else block
        self._buffer, self._buffer_start = self._buffer[self.seek - self._buffer_start :], self.seek
        self.duration = max(self.duration, (self._buffer_start + len(self._buffer)) / sr)
        window = self._buffer[: self._size]
        return None if len(window) < sr // 100 else window  # (a short window means the stream is exhausted)

    @property
    def conditioning(self) -> list[int]:
        """The prompt of the next window: the text before it, or the initial prompt alone."""
        if self._condition:
            return self._history[self._reset_at :]
        return self._prompt if self.key == 0 else []

    def advance(self, result: WindowResult, window_len: int) -> tuple[list[int], float, float]:
        """Take the decode of the window of ``window_len`` samples at ``seek``: (tokens kept, the window's start,
        its duration) in seconds; moves ``seek`` to where the next window starts."""
        sr = audio_mod.SAMPLE_RATE
        start, duration = self.seek / sr, window_len / sr
        kept, advance = split_at_last_segment(result.tokens, self._timestamp_begin, duration)
        if result.silent or not kept:
            advance = duration
        self._history += kept
        if result.temperature > PROMPT_RESET_TEMPERATURE:
            self._reset_at = len(self._history)
        self.seek += max(int(round(advance * sr)), 1)
        self.key += 1
        return kept, start, duration


class SequentialRunner:
    """Runs the seeking loops of up to ``batch_size`` lanes in lock-step: a lane is an input, or a section of a
    long one (:mod:`whisperctl.sections`, ``options.section_length_s`` of speech or more, cut at a pause; 0: no
    sections). It reads the windows and decodes them; which lanes run and where their text goes is the
    :class:`~whisperctl.lanes.LaneBook`'s."""

    def __init__(self, context: RunContext, resume: Callable[[AudioInput], Resume | None] | None = None,
                 checkpoints: bool = False):
        self.decoder, self.options, self.progress = context.decoder, context.options, context.progress
        self._finish, self._new_builder = context.finish, context.new_builder
        self._prompt_for, self._call = context.prompt_for, context.call
        self._resume, self._checkpoints = resume, checkpoints  # resume points per input; Checkpoint events
        self.loaded = self.decoder.loaded
        options = self.options
        self._prompt = self.loaded.text_tokens(options.initial_prompt) if options.initial_prompt else []
        self._section_s = options.section_length_s

    def run(self, inputs: Intake | list[tuple[AudioInput, SpeechStream]]) -> Iterator[Event]:
        """Events input after input: each input's segments as they settle, then its FileDone. A live intake is
        read at every batch boundary (fair lanes, events as they settle, cancelled inputs failed)."""
        intake = inputs if isinstance(inputs, Intake) else Intake(inputs)
        book = LaneBook(self.options.batch_size, self._finish, ordered=not intake.live)
        while not intake.exhausted or not book.idle:
            if intake.live:
                for owner in book.running:
                    if intake.cancelled(owner.source):
                        book.fail(owner, Cancelled(f"{owner.source.name}: cancelled"))
                        intake.forget(owner.source)
            yield from self._open_lanes(intake, book)
            batch: list[tuple[Lane, np.ndarray]] = []
            for lane in list(book.live):
                if lane.owner.done:  # an earlier lane of its input failed in this loop: its lanes are gone
                    continue
                try:
                    window = lane.seeker.window()
                except WhisperctlError as exc:
                    book.fail(lane.owner, exc)
                    continue
                if window is None:
                    book.lane_finished(lane, lane.seeker.duration)
                else:
                    batch.append((lane, window))
            if batch:
                self._decode(batch, book)
            yield from book.ready()

    def _open_lanes(self, intake: Intake, book: LaneBook) -> Iterator[Event]:
        """Fill free lanes: the next sections of inputs already admitted (oldest first), then new inputs.

        An input that ends without taking a lane (no speech found, or unreadable) is reported at once, not after
        the lanes are full; and while lanes are live, at most one such input is read before their next batch,
        so a run of speechless inputs (a folder of noise) never holds back the live lanes' decoding. With nothing
        to run, it waits on a live intake for the next input."""
        laneless = 0  # inputs admitted in this call that ended without a lane
        while book.has_room:
            owner = book.to_open(newcomers=intake.live and intake.pending)
            if owner is None:
                if laneless and book.live:
                    return
                taken = intake.take(wait=book.idle)
                if taken is None:
                    return
                inp, blocks = taken
                builder = self._new_builder(inp, blocks)
                resume = self._resume(inp) if self._resume is not None else None
                if resume is not None:
                    builder.resume(resume)
                owner = book.admit(inp, builder, Sections(blocks, self._section_s), self._checkpoints,
                                   resume.point.duration if resume is not None else 0.0)
                owner.resume = resume.point if resume is not None else None
            try:
                section = owner.sections.next()
                point = owner.resume
                while section is not None and point is not None and section.index < point.section:
                    section = owner.sections.next()  # done before the interruption (the VAD still hears it)
            except WhisperctlError as exc:
                book.fail(owner, exc)
                section = None
            if section is None:
                book.sections_ended(owner)
                if owner.done and not owner.opened:
                    laneless += 1
                yield from book.ready()
                continue
            point, owner.resume = owner.resume, None
            # inside the section: its seeking state; at its start (a section that had finished before it), a fresh
            # loop, as an uninterrupted run opens it (the initial prompt included)
            inside = point is not None and point.section == section.index and (point.seek or point.window)
            at = (point.seek, point.window, list(point.history)) if inside else None
            prompt = self._prompt_for(owner.source) if self._prompt_for is not None else None
            book.open(owner, section.index, section.offset / audio_mod.SAMPLE_RATE, Seeker(
                section.blocks, self._prompt if prompt is None else prompt, self.options.condition_on_previous_text, self.loaded.timestamp_begin,
                resume=at))

    def _decode(self, batch: list[tuple[Lane, np.ndarray]], book: LaneBook) -> None:
        def work() -> tuple[list[WindowResult], float]:
            t0 = time.perf_counter()  # the decode's own time, not a wait for the model's thread
            found = self.decoder.decode([w for _, w in batch], [lane.owner.builder.language for lane, _ in batch],
                                        [lane.seeker.conditioning for lane, _ in batch], [id(lane.owner) for lane, _ in batch])
            return found, time.perf_counter() - t0

        try:
            results, seconds = self._call(work)
        except WhisperctlError as exc:  # the batch failed as a whole: each of its inputs fails with it
            for lane, _ in batch:
                book.fail(lane.owner, exc)
            return
        share = (seconds - sum(r.align_s for r in results)) / len(batch)
        for (lane, window), result in zip(batch, results):
            if lane.owner.done:
                continue
            key = (lane.index, lane.seeker.key)
            lane.owner.builder.window_decoded(key, result, share)
            kept, start, duration = lane.seeker.advance(result, len(window))
            timed = window_tokens(self.loaded, key, kept, lane.offset_s + start, duration, result.token_times)
            book.decoded(lane, timed, key, (lane.index, *lane.seeker.state()) if self._checkpoints else None)
            if self.progress:
                self.progress(lane.owner.source.name, min(lane.seeker.seek / audio_mod.SAMPLE_RATE, start + duration) - start)
