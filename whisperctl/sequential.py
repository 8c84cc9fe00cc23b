"""Sequential chunking: openai-whisper's seeking loop, one 30 s window at a time.

Each window starts where the previous one's last complete segment ended; a window that ends in the middle of
a segment is decoded again from that segment's start. With ``condition_on_previous_text`` each window is
prompted with the text before it (reset after a window that needed a temperature above 0.5, as
openai-whisper does). Decoding goes through the same :class:`~whisperctl.decoding.WindowDecoder` as the
batched mode, so the same fallback and silence rules apply. The audio is read as a stream: memory holds one
window and one block, whatever the file's length.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Iterable, Iterator

import numpy as np

from . import audio as audio_mod, longform
from .config import DecodeOptions
from .decoding import WindowDecoder
from .errors import WhisperctlError
from .transcript import Event, FileDone, SegmentReady, TranscriptBuilder, window_tokens

WINDOW_S = 30.0
PROMPT_RESET_TEMPERATURE = 0.5  # openai-whisper: a window decoded hotter than this does not prompt the next


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


class SequentialRunner:
    def __init__(self, decoder: WindowDecoder, options: DecodeOptions, finish: Callable[[TranscriptBuilder, float], Any],
                 new_builder: Callable[[audio_mod.AudioInput, Any], TranscriptBuilder], progress: Callable[[str, float], None] | None = None):
        self.decoder, self.options, self.progress = decoder, options, progress
        self._finish, self._new_builder = finish, new_builder
        self.loaded = decoder.loaded

    def run(self, inputs: list[tuple[audio_mod.AudioInput, Iterable[np.ndarray]]]) -> Iterator[Event]:
        for inp, blocks in inputs:
            builder = self._new_builder(inp, blocks)
            try:
                duration = yield from self._file(builder, blocks)
            except WhisperctlError as exc:
                yield FileDone(inp, exc)
                continue
            for segment in builder.close(duration):
                yield SegmentReady(inp, segment)
            yield FileDone(inp, self._finish(builder, duration))

    def _file(self, builder: TranscriptBuilder, blocks: Iterable[np.ndarray]) -> Generator[Event, None, float]:
        """The file's settled segments as it is decoded; returns its duration in seconds."""
        lm, opts, sr = self.loaded, self.options, audio_mod.SAMPLE_RATE
        size = int(WINDOW_S * sr)
        buffer = np.zeros(0, np.float32)
        buffer_start = 0  # absolute sample index of buffer[0]
        seek = 0
        stream = iter(blocks)
        exhausted = False
        prompt = lm.text_tokens(opts.initial_prompt) if opts.initial_prompt else []
        history: list[int] = list(prompt)
        reset_at = 0
        key = 0
        while True:
            while not exhausted and buffer_start + len(buffer) < seek + size:
                block = next(stream, None)
                if block is None:
                    exhausted = True
                else:
                    buffer = np.concatenate([buffer, block]) if len(buffer) else np.asarray(block, np.float32)
            buffer, buffer_start = buffer[seek - buffer_start :], seek
            window = buffer[:size]
            if len(window) < sr // 100:  # (a short window means the stream is exhausted)
                return (buffer_start + len(buffer)) / sr
            start = seek / sr
            t0 = time.perf_counter()
            conditioning = history[reset_at:] if opts.condition_on_previous_text else prompt if key == 0 else []
            result = self.decoder.decode([window], [builder.language], [conditioning])[0]
            builder.window_decoded(key, result, time.perf_counter() - t0 - result.align_s)
            duration = len(window) / sr
            kept, advance = split_at_last_segment(result.tokens, lm.timestamp_begin, duration)
            if result.silent or not kept:
                advance = duration
            for segment in builder.add(window_tokens(lm, key, kept, start, duration, result.token_times)):
                yield SegmentReady(builder.source, segment)
            builder.forget([key])
            history += kept
            if result.temperature > PROMPT_RESET_TEMPERATURE:
                reset_at = len(history)
            seek += max(int(round(advance * sr)), 1)
            if self.progress:
                self.progress(builder.source.name, advance)
            key += 1
