import numpy as np
import pytest

from whisperctl import longform


def test_windows_cover_the_stream_with_the_requested_overlap():
    sr = 100
    blocks = [np.arange(i, i + 37, dtype=np.float32) for i in range(0, 370, 37)]  # 3.7 s in odd blocks
    wins = list(longform.windows(blocks, chunk_s=1.0, overlap_s=0.2, sample_rate=sr))
    assert [w.start for w in wins] == pytest.approx([0.0, 0.8, 1.6, 2.4, 3.2])
    assert all(len(w.samples) == 100 for w in wins[:-1])
    covered = np.concatenate([w.samples[(0 if i == 0 else 20):] for i, w in enumerate(wins)])
    np.testing.assert_array_equal(covered, np.arange(370, dtype=np.float32))


def test_short_stream_is_one_window_and_exact_fit_adds_no_empty_tail():
    assert len(list(longform.windows([np.zeros(50, np.float32)], 1.0, 0.2, 100))) == 1
    wins = list(longform.windows([np.zeros(180, np.float32)], 1.0, 0.2, 100))
    assert [len(w.samples) for w in wins] == [100, 100]


def _tok(i, t, window=0, seg=0):
    return longform.TimedToken(i, t, t + 0.1, (window, seg), t, t + 0.1)


def test_merge_joins_on_common_run_without_doubling():
    a = [_tok(i, 0.5 * i) for i in range(1, 11)]  # ids 1..10, times up to 5 s
    b = [_tok(i, 3.0 + 0.5 * (i - 7), window=1) for i in range(7, 15)]  # starts mid-overlap with 7,8,9,10
    merged = longform.merge(a, b, overlap_start=3.0, overlap_end=5.0)
    assert [t.id for t in merged] == list(range(1, 15))


def test_merge_tolerates_disagreeing_edges():
    a = [_tok(i, t) for i, t in [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (99, 5.8)]]  # garbage at the end
    b = [_tok(i, t, 1) for i, t in [(77, 3.5), (4, 4.0), (5, 5.0), (6, 6.0), (7, 7.0)]]  # garbage at the start
    merged = longform.merge(a, b, overlap_start=3.5, overlap_end=6.0)
    assert [t.id for t in merged] == [1, 2, 3, 4, 5, 6, 7]


def test_merge_without_common_run_cuts_at_the_middle_by_time():
    a = [_tok(1, 0.0), _tok(2, 1.0), _tok(3, 4.2)]
    b = [_tok(8, 3.1, 1), _tok(9, 4.6, 1), _tok(10, 6.0, 1)]
    merged = longform.merge(a, b, overlap_start=3.0, overlap_end=5.0)
    assert [t.id for t in merged] == [1, 2, 9, 10]


def test_parse_window_timestamps_and_proportional_times():
    ts = 1000
    ids = [ts + 0, 5, 6, ts + 100, ts + 100, 7, ts + 150, 50]  # two segments; 50 = eos; times in 0.02 s steps
    toks = longform.parse_window(ids, 3, 10.0, 30.0, eos_id=50, timestamp_begin=ts, token_weight=lambda t: 1)
    assert [t.id for t in toks] == [5, 6, 7]
    assert toks[0].start == pytest.approx(10.0) and toks[1].end == pytest.approx(12.0)
    assert toks[2].segment == (3, 1) and toks[2].start == pytest.approx(12.0) and toks[2].end == pytest.approx(13.0)


def test_parse_window_without_timestamps_spans_the_window():
    toks = longform.parse_window([5, 6, 50], 0, 0.0, 8.0, eos_id=50, timestamp_begin=1000, token_weight=lambda t: 1)
    assert toks[-1].end == pytest.approx(8.0)


def test_build_segments_monotonic_and_clamped():
    toks = [_tok(1, 0.0, 0, 0), _tok(2, 0.1, 0, 0), _tok(3, 0.05, 1, 0), _tok(4, 9.9, 1, 0)]
    segs = longform.build_segments(toks, lambda ids: " " + " ".join(map(str, ids)), duration=9.95)
    assert [s.text for s in segs] == [" 1 2", " 3 4"]
    for prev, cur in zip(segs, segs[1:]):
        assert cur.start >= prev.end
    assert all(0 <= s.start <= s.end <= 9.95 for s in segs)


def test_parse_window_handles_a_second_pass_whose_timestamps_restart():
    ts = 1000
    ids = [ts + 0, 5, ts + 1400, ts + 1400, ts + 0, 6, ts + 50]  # pass 2 starts at 28 s with times from 0
    toks = longform.parse_window(ids, 0, 0.0, 30.0, eos_id=50, timestamp_begin=ts, token_weight=lambda t: 1)
    assert toks[1].start == pytest.approx(28.0) and toks[1].end == pytest.approx(29.0)


def test_merge_keeps_speech_the_earlier_window_never_reached():
    a = [_tok(1, 70.0), _tok(2, 73.9)]  # window stopped at its last complete segment, 74.0 s
    b = [_tok(7, 75.0, 1), _tok(8, 76.0, 1), _tok(9, 79.0, 1)]  # shared region 75..80: all of b is new
    assert [t.id for t in longform.merge(a, b, overlap_start=75.0, overlap_end=80.0)] == [1, 2, 7, 8, 9]


def test_merge_ignores_a_common_pair_said_seconds_apart():
    # Window a heard "...development of the ancient Roman character," up to 126 s; window b (from 125 s) heard
    # "room in character, and which developed ... on the side of the lower case" — " of the" occurs in both, but
    # 6 s apart: joining there would drop everything in between. The seam is " character ," at the same time.
    of, the, ancient, roman, character, comma, side, lower, room, which = range(10, 20)
    a = [_tok(i, t) for i, t in [(of, 123.5), (the, 123.8), (ancient, 124.2), (roman, 124.8), (character, 125.4), (comma, 126.0)]]
    b = [_tok(i, t, 1) for i, t in [(room, 125.0), (character, 125.6), (comma, 126.1), (which, 127.0), (side, 129.2), (of, 129.6), (the, 129.9), (lower, 130.3)]]
    merged = longform.merge(a, b, overlap_start=125.0, overlap_end=130.0)
    assert [t.id for t in merged] == [of, the, ancient, roman, character, comma, which, side, of, the, lower]
