"""Long-form audio for batched decoding: overlapping windows, token timing, and seam-free merging.

Pure functions over numpy arrays and token ids (no torch), so the merge rules are unit-tested directly.

Merging two neighbouring windows: the tokens that fall in their shared region are compared, and the
longest run of identical tokens found in both is the seam. The earlier window keeps the tokens up to the
middle of that run, the later window contributes the rest, so no word is dropped or doubled. When the
two windows share no run of two or more tokens (silence, disagreement, or the earlier window stopped at
its last complete segment before the shared region), the cut falls at the middle of the shared region by
time, or where the earlier window stopped if that is sooner.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from .results import Segment, Word

TIME_PRECISION = 0.02  # seconds per Whisper timestamp token


@dataclasses.dataclass
class Window:
    index: int  # position in the file (the engine may key it otherwise)
    start: float  # absolute start, seconds
    samples: np.ndarray  # 16 kHz mono float32, at most chunk length
    sample_rate: int = 16_000

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclasses.dataclass
class TimedToken:
    id: int
    start: float  # absolute seconds
    end: float
    segment: tuple[object, int]  # (window key, segment index in that window)
    segment_start: float  # the segment's own timestamps, absolute
    segment_end: float
    probability: float | None = None  # set by the word alignment pass


def windows(blocks: Iterable[np.ndarray], chunk_s: float, overlap_s: float, sample_rate: int = 16_000) -> Iterator[Window]:
    """Cut a stream of sample blocks into windows of ``chunk_s`` that overlap by ``overlap_s``.

    Holds at most one window plus one block in memory, whatever the length of the stream.
    """
    size = int(round(chunk_s * sample_rate))
    step = size - int(round(overlap_s * sample_rate))
    if step <= 0:
        raise ValueError("overlap must be shorter than the window")
    buffer = np.zeros(0, dtype=np.float32)
    consumed = 0  # samples dropped from the front of the buffer so far
    index = 0
    emitted_end = 0  # absolute sample index up to which audio has been covered
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if len(buffer) else np.asarray(block, dtype=np.float32)
        while len(buffer) >= size:
            yield Window(index, consumed / sample_rate, buffer[:size].copy(), sample_rate)
            index += 1
            emitted_end = consumed + size
            buffer = buffer[step:]
            consumed += step
    if len(buffer) and (index == 0 or consumed + len(buffer) > emitted_end):
        yield Window(index, consumed / sample_rate, buffer.copy(), sample_rate)


def parse_window(
    ids: Sequence[int],
    window_index: object,
    window_start: float,
    window_duration: float,
    eos_id: int,
    timestamp_begin: int,
    token_weight: Callable[[int], int],
) -> list[TimedToken]:
    """Turn one window's generated ids (timestamp tokens included or not) into absolutely timed text tokens.

    Within a segment, token times are spread in proportion to each token's text length; the word
    alignment pass replaces them with measured times when word timestamps are requested.
    """
    segments: list[tuple[float, float, list[int]]] = []
    current: list[int] = []
    seg_start: float | None = None
    last_time = 0.0
    offset = 0.0  # a timestamp that goes backwards at a segment start opens a new pass from the last time
    for tok in ids:
        tok = int(tok)
        if tok >= timestamp_begin:
            t = offset + (tok - timestamp_begin) * TIME_PRECISION
            if not current and t < last_time - 1e-6:
                offset = last_time
                t = offset + (tok - timestamp_begin) * TIME_PRECISION
            t = min(t, window_duration)
            if current:
                segments.append((seg_start if seg_start is not None else last_time, max(t, last_time), current))
                current, seg_start = [], None
            else:
                seg_start = t
            last_time = t
        elif tok < eos_id:
            if seg_start is None and not current:
                seg_start = last_time
            current.append(tok)
    if current:
        segments.append((seg_start if seg_start is not None else last_time, window_duration, current))

    out: list[TimedToken] = []
    for s_idx, (start, end, toks) in enumerate(segments):
        start = min(max(start, 0.0), window_duration)
        end = min(max(end, start), window_duration)
        weights = np.array([max(1, token_weight(t)) for t in toks], dtype=np.float64)
        edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        for i, tok in enumerate(toks):
            out.append(
                TimedToken(
                    tok,
                    window_start + float(edges[i]),
                    window_start + float(edges[i + 1]),
                    (window_index, s_idx),
                    window_start + start,
                    window_start + end,
                )
            )
    return out


def apply_token_times(
    timed: list[TimedToken], times: Sequence[tuple[float, float, float]] | None, window_start: float
) -> None:
    """Replace the spread-out times of a window's text tokens with measured (start, end, probability) ones."""
    if not times:
        return
    for tok, (s, e, p) in zip(timed, times):
        tok.start, tok.end, tok.probability = window_start + s, window_start + e, p


def _longest_common_run(a: Sequence[TimedToken], b: Sequence[TimedToken], max_shift: float) -> tuple[int, int, int]:
    """(start in a, start in b, length) of the longest contiguous run of the same ids in both whose tokens lie
    within ``max_shift`` seconds of each other; ties go to the run whose times agree best.

    Without the time condition a seam can join on a common pair such as " of the" said twice seconds apart,
    dropping everything spoken between the two.
    """
    best = (0, 0, 0)
    best_shift = float("inf")
    if not a or not b:
        return best
    prev = [0] * (len(b) + 1)
    for i in range(1, len(a) + 1):
        cur = [0] * (len(b) + 1)
        ta = a[i - 1]
        for j in range(1, len(b) + 1):
            tb = b[j - 1]
            if ta.id == tb.id and abs(ta.start - tb.start) <= max_shift:
                cur[j] = prev[j - 1] + 1
                shift = abs(ta.start - tb.start)
                if cur[j] > best[2] or (cur[j] == best[2] and shift < best_shift):
                    best, best_shift = (i - cur[j], j - cur[j], cur[j]), shift
        prev = cur
    return best


def merge(
    merged: list[TimedToken],
    nxt: list[TimedToken],
    overlap_start: float,
    overlap_end: float,
    slack: float = 1.5,
    min_run: int = 2,
    max_shift: float = 3.0,
) -> list[TimedToken]:
    """Append window tokens ``nxt`` to ``merged``; the two windows share audio in [overlap_start, overlap_end].

    ``slack`` widens the search region by the expected error of the token times (a few seconds when the
    windows were decoded without timestamps); ``min_run`` is the shortest common run trusted as the seam;
    ``max_shift`` is how far apart in time two tokens may lie and still count as the same spoken token.
    """
    if not merged:
        return list(nxt)
    if not nxt or overlap_end <= overlap_start:
        return merged + list(nxt)
    a_from = next((i for i, t in enumerate(merged) if t.end >= overlap_start - slack), len(merged))
    b_to = next((i for i, t in enumerate(nxt) if t.start > overlap_end + slack), len(nxt))
    a_tail = merged[a_from:]
    b_head = nxt[:b_to]
    ia, ib, length = _longest_common_run(a_tail, b_head, max_shift)
    if length >= min_run or (length == 1 and len(a_tail) == 1 and len(b_head) == 1):
        keep = (length + 1) // 2
        return merged[: a_from + ia + keep] + list(nxt[ib + keep :])
    # No shared run: cut in the middle of the overlap, but never after the point where the earlier window
    # stopped transcribing (a window ends at its last complete segment), so nothing falls between the two.
    cut = min((overlap_start + overlap_end) / 2, merged[-1].end)
    left = [t for t in merged if (t.start + t.end) / 2 < cut]
    right = [t for t in nxt if (t.start + t.end) / 2 >= cut]
    return left + right


def build_segments(
    tokens: list[TimedToken],
    decode: Callable[[list[int]], str],
    duration: float,
    with_words: bool = False,
    is_word_start: Callable[[int], bool] | None = None,
    prev_end: float = 0.0,
    quality: Callable[[object], dict[str, float | None]] | None = None,
) -> list[Segment]:
    """Group merged tokens back into segments with monotonic timestamps inside [prev_end, duration].

    ``prev_end``: where the segments already built end (streaming builds segments in several calls);
    ``quality(window_key)``: the Segment quality fields of the window a segment comes from.
    """
    segments: list[Segment] = []
    i = 0
    while i < len(tokens):
        j = i
        while j < len(tokens) and tokens[j].segment == tokens[i].segment:
            j += 1
        group = tokens[i:j]
        first, last = group[0], group[-1]
        start = first.segment_start if abs(first.start - first.segment_start) < 1e-6 else first.start
        end = last.segment_end if abs(last.end - last.segment_end) < 1e-6 else last.end
        start = min(max(start, prev_end), duration)
        end = min(max(end, start), duration)
        ids = [t.id for t in group]
        text = decode(ids)
        if text.strip():
            seg = Segment(round(start, 3), round(end, 3), text, ids, **(quality(first.segment[0]) if quality else {}))
            if with_words and is_word_start is not None:
                seg.words = _words(group, decode, is_word_start, start, end)
                if seg.words:
                    seg.start, seg.end = settle_word_edges(seg.words, seg.start, seg.end, prev_end)
                    end = seg.end
            segments.append(seg)
            prev_end = end
        i = j
    return segments


SENTENCE_END = ".。!！?？"


def settle_word_edges(words: list[Word], start: float, end: float, last_speech: float) -> tuple[float, float]:
    """openai-whisper's corrections of word times, in place; returns the segment's (start, end) from its words.

    Cross-attention stretches a word over the silence before it (a segment after 20 s of silence began with a
    20 s "With"): a word longer than twice the median word (at most 1.4 s) after a sentence end, or the first
    word after a pause, is cut to that length at its end. The segment then takes its first word's start and
    last word's end, unless the segment's own timestamp is half a second inside a word still too long."""
    durations = [w.end - w.start for w in words if w.end > w.start]
    if not durations:
        return start, end
    median = min(0.7, float(np.median(durations)))
    longest = 2 * median
    for prev, word in zip(words, words[1:]):
        if word.end - word.start > longest and prev.word.rstrip()[-1:] in SENTENCE_END:
            word.start = round(word.end - longest, 3)
    first = words[0]
    if first.end - last_speech > 4 * median and (
        first.end - first.start > longest or (len(words) > 1 and words[1].end - first.start > 2 * longest)
    ):
        if len(words) > 1 and words[1].end - words[1].start > longest:
            boundary = round(max(words[1].end / 2, words[1].end - longest), 3)
            first.end = words[1].start = boundary
        first.start = round(max(0.0, first.end - longest), 3)
    if start < first.end and start - 0.5 > first.start:
        first.start = round(max(0.0, min(first.end - median, start)), 3)
    else:
        start = first.start
    last = words[-1]
    if end > last.start and end + 0.5 < last.end:
        last.end = round(max(last.start + median, end), 3)
    else:
        end = last.end
    return start, end


def _words(
    group: list[TimedToken], decode: Callable[[list[int]], str], is_word_start: Callable[[int], bool], lo: float, hi: float
) -> list[Word]:
    words: list[Word] = []
    current: list[TimedToken] = []

    def flush() -> None:
        if current:
            text = decode([t.id for t in current])
            start = min(max(current[0].start, lo, words[-1].end if words else lo), hi)
            end = min(max(current[-1].end, start), hi)
            probs = [t.probability for t in current if t.probability is not None]
            if text.strip():
                words.append(Word(round(start, 3), round(end, 3), text, round(float(np.mean(probs)), 4) if probs else None))

    for tok in group:
        if current and is_word_start(tok.id):
            flush()
            current = []
        current.append(tok)
    flush()
    return words
