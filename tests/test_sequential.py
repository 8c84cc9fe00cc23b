"""The sequential loop's state (whisperctl.sequential.Seeker) with fake window results: no model.

openai-whisper's and faster-whisper's seeking: a window that ends with an unfinished segment is decoded again
from that segment's start; one that ends with a single timestamp (or no timestamp pair) is consumed whole; the
previous text prompts the next window, reset after a window decoded hotter than 0.5.
"""

import numpy as np
import pytest

from whisperctl.decoding import WindowResult
from whisperctl.sequential import Seeker

SR = 16_000
TB = 50_000  # timestamp_begin of this fake vocabulary: token TB + k is k * 0.02 s


def ts(seconds: float) -> int:
    return TB + round(seconds / 0.02)


def result(tokens, temperature=0.0, silent=False) -> WindowResult:
    return WindowResult(tokens=list(tokens), language="en", avg_logprob=-0.2, no_speech_prob=0.1,
                        compression_ratio=1.2, temperature=temperature, silent=silent)


def seeker(seconds: float, block_s: float = 7.3, condition=True, prompt=()) -> Seeker:
    audio = np.arange(int(seconds * SR), dtype=np.float32)  # sample i holds i: windows show where they start
    n = int(block_s * SR)
    return Seeker([audio[i : i + n] for i in range(0, len(audio), n)], list(prompt), condition, TB)


def test_unfinished_segment_is_decoded_again_from_its_start():
    s = seeker(70.0)
    w = s.window()
    assert len(w) == 30 * SR and w[0] == 0
    kept, start, duration = s.advance(result([ts(0), 1, 2, ts(4.0), ts(4.0), 3, 4, ts(12.5), ts(12.5), 5, 6]), len(w))
    assert kept == [ts(0), 1, 2, ts(4.0), ts(4.0), 3, 4, ts(12.5)] and (start, duration) == (0.0, 30.0)
    w = s.window()
    assert w[0] == 12.5 * SR and s.conditioning == kept  # the next window starts at the last complete segment


def test_single_timestamp_ending_and_no_pair_consume_the_window():
    s = seeker(70.0)
    s.advance(result([ts(0), 1, 2, ts(3.0), ts(3.0), 4, ts(9.0)]), len(s.window()))
    assert s.window()[0] == 30 * SR
    s.advance(result([7, 8, 9]), 30 * SR)  # no timestamps at all
    assert s.window()[0] == 60 * SR


def test_silent_window_is_skipped_and_does_not_prompt():
    s = seeker(70.0, prompt=[11, 12])
    assert s.conditioning == [11, 12]
    s.advance(result([], silent=True), len(s.window()))
    assert s.window()[0] == 30 * SR and s.conditioning == [11, 12]


def test_prompt_resets_after_a_hot_window_and_without_conditioning():
    s = seeker(100.0)
    s.advance(result([ts(0), 1, ts(2.0)]), len(s.window()))
    s.advance(result([ts(0), 2, ts(2.0)], temperature=0.6), len(s.window()))
    assert s.conditioning == []  # openai-whisper: hotter than 0.5 does not prompt the next window
    s.advance(result([ts(0), 3, ts(2.0)]), len(s.window()))
    assert s.conditioning == [ts(0), 3, ts(2.0)]
    plain = seeker(100.0, condition=False, prompt=[42])
    assert plain.conditioning == [42]  # the initial prompt prompts the first window only
    plain.advance(result([ts(0), 1, ts(2.0)]), len(plain.window()))
    assert plain.conditioning == []


def test_last_window_is_short_and_then_the_stream_ends():
    s = seeker(41.0, block_s=41.0)
    s.advance(result([ts(0), 1, ts(30.0)]), len(s.window()))
    last = s.window()
    assert len(last) == 11 * SR
    kept, start, duration = s.advance(result([ts(0), 2, ts(5.0)]), len(last))
    assert (start, duration) == (30.0, 11.0)
    assert s.window() is None and s.duration == pytest.approx(41.0)


def test_a_timestamp_pair_at_zero_still_moves_on():
    s = seeker(70.0)
    s.advance(result([ts(0), ts(0), 5, 6]), len(s.window()))  # never stall: a zero advance takes the window
    assert s.window()[0] == 30 * SR
