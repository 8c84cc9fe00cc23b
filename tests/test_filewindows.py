"""One file's batched windows (whisperctl.filewindows.FileWindows) with fake window results: no model.

planned → decoded → merged → settled → complete: overlapping windows merge at the seam without doubling words,
tokens settle only once no later window can change them, a window whose text stops short of the next window
gets a gap window for the untranscribed audio, and a failed file settles nothing.
"""

import numpy as np
import pytest

from whisperctl.filewindows import MERGE_SLACK_S, FileWindows, WindowKey, Windowing
from whisperctl.longform import TimedToken, Window

SR = 16_000
AUDIO = np.arange(60 * SR, dtype=np.float32)  # sample i holds i: a window's samples show where they start


def window(index: int, start: float, duration: float) -> Window:
    return Window(index, start, AUDIO[int(start * SR) : int((start + duration) * SR)])


def tokens(key: WindowKey, *spans: tuple[int, float, float]) -> list[TimedToken]:
    """(id, start, end) per token, each token its own segment of window ``key``."""
    return [TimedToken(i, s, e, (key, n), s, e) for n, (i, s, e) in enumerate(spans)]


def overlapping(**kwargs) -> FileWindows:
    return FileWindows(Windowing(chunk_length_s=30.0, overlap_s=5.0, **kwargs))  # windows at 0, 25, 50 …


def test_decoded_tokens_settle_only_before_the_next_windows_start():
    f = overlapping()
    w0, w1 = window(0, 0.0, 30.0), window(1, 25.0, 30.0)
    k0, k1 = f.plan(w0), f.plan(w1)
    assert (k0, k1) == (WindowKey(0), WindowKey(1)) and not f.finished
    f.decoded(k0, w0, tokens(k0, (1, 1.0, 2.0), (2, 10.0, 11.0), (7, 26.0, 27.0), (8, 27.5, 28.5)))
    assert f.due_gaps() == []  # decided once window 1 is decoded
    settled = f.settle()
    # window 1 starts at 25 s and may still change what lies after 25 - slack
    assert [t.id for t in settled.tokens] == [1, 2] and all(t.end < 25.0 - MERGE_SLACK_S for t in settled.tokens)
    assert settled.windows_done == set()  # window 0 still has unsettled tokens
    assert f.settle().tokens == []  # nothing new has come


def test_overlap_is_merged_once_and_the_rest_settles_at_the_end_of_the_file():
    f = overlapping()
    w0, w1 = window(0, 0.0, 30.0), window(1, 25.0, 30.0)
    k0, k1 = f.plan(w0), f.plan(w1)
    f.end_of_audio()
    f.decoded(k0, w0, tokens(k0, (1, 1.0, 2.0), (7, 26.0, 27.0), (8, 27.5, 28.5)))
    f.decoded(k1, w1, tokens(k1, (7, 26.0, 27.0), (8, 27.5, 28.5), (9, 40.0, 41.0), (10, 52.0, 54.0)))
    assert f.due_gaps() == []  # both texts reach their window's end
    assert f.finished
    settled = f.settle()
    assert [t.id for t in settled.tokens] == [1, 7, 8, 9, 10]  # the shared run once
    assert settled.windows_done == {k0, k1}
    assert f.complete() == ([], 55.0)


def test_text_stopping_short_of_the_next_window_gets_a_gap_window():
    f = overlapping()
    w0, w1 = window(0, 0.0, 30.0), window(1, 25.0, 30.0)
    k0, k1 = f.plan(w0), f.plan(w1)
    f.end_of_audio()
    f.decoded(k0, w0, tokens(k0, (1, 1.0, 2.0), (2, 12.0, 20.0)))  # 20 s to 25 s are transcribed by no window
    assert f.due_gaps() == []  # the gap window takes window 1's audio: decided once that is decoded
    f.decoded(k1, w1, tokens(k1, (9, 40.0, 41.0), (10, 52.0, 54.0)))
    [(key, gap)] = f.due_gaps()
    assert key == WindowKey(0, gap=True) and WindowKey(0) < key < WindowKey(1)
    # from where the text stopped, a window long (into window 1's audio), contiguous
    assert gap.start == 20.0 and len(gap.samples) == 30 * SR
    assert gap.samples[0] == 20 * SR and np.all(np.diff(gap.samples) == 1)
    assert not f.finished
    assert [t.id for t in f.settle().tokens] == [1]  # nothing past the gap window's start - slack
    assert f.decoded(key, gap, tokens(key, (3, 21.0, 22.0))) == 0.0  # its audio was counted with window 0
    assert f.finished and f.due_gaps() == []
    assert [t.id for t in f.settle().tokens] == [2, 3, 9, 10]


def test_last_window_with_an_untranscribed_tail_gets_a_gap_window_to_the_end():
    f = overlapping()
    w0 = window(0, 0.0, 12.0)
    k0 = f.plan(w0)
    f.end_of_audio()
    f.decoded(k0, w0, tokens(k0, (1, 1.0, 6.0)))
    [(key, gap)] = f.due_gaps()
    assert key == WindowKey(0, gap=True) and (gap.start, gap.duration) == (6.0, 6.0)


@pytest.mark.parametrize("text_end", [10.5, 11.0])
def test_a_tail_shorter_than_two_seconds_is_not_decoded_again(text_end):
    f = overlapping()
    w0 = window(0, 0.0, 12.0)
    k0 = f.plan(w0)
    f.end_of_audio()
    f.decoded(k0, w0, tokens(k0, (1, 1.0, text_end)))
    assert f.due_gaps() == [] and f.finished


def test_vad_windows_use_their_own_tail_and_no_gaps_when_turned_off():
    def last_window_gaps(**kwargs) -> int:
        f = FileWindows(Windowing(30.0, 0.0, independent=True, **kwargs))
        w0 = window(0, 0.0, 12.0)
        k0 = f.plan(w0)
        f.end_of_audio()
        f.decoded(k0, w0, tokens(k0, (1, 1.0, 11.0)))  # text stops 1 s before the window's end
        return len(f.due_gaps())

    assert last_window_gaps(vad_tail_s=0.7) == 1
    assert last_window_gaps(vad_tail_s=2.0) == 0
    assert last_window_gaps(vad_tail_s=0.7, gaps=False) == 0


def test_progress_counts_each_second_of_audio_once():
    f = FileWindows(Windowing(30.0, 0.0, independent=True))
    w0, w1 = window(0, 0.0, 20.0), window(1, 35.0, 10.0)  # a VAD skipped 20 s to 35 s
    k0, k1 = f.plan(w0), f.plan(w1)
    assert f.decoded(k0, w0, []) == 20.0
    assert f.decoded(k1, w1, []) == 25.0  # the skipped audio is done too


def test_a_failed_file_is_finished_and_settles_nothing():
    from whisperctl.errors import AudioError

    f = overlapping()
    w0 = window(0, 0.0, 30.0)
    k0 = f.plan(w0)
    f.decoded(k0, w0, tokens(k0, (1, 1.0, 2.0)))
    f.fail(AudioError("x.flac: truncated"))
    assert f.finished and str(f.error) == "x.flac: truncated"
    assert f.due_gaps() == [] and f.settle().tokens == []
