"""Repetition loops: text that ends in the same few tokens over and over, and the rule that stops decoding it.

Whisper loops on music, tones and repeated words: a window of 16 s of one repeated word came back as 298 words of
"Control it, Control it, …", decoded to the 224-token limit at every one of six temperatures (35 s for 16 s of
audio). openai-whisper and faster-whisper judge a window's text only once it is decoded (its gzip compression
ratio); whisperctl also stops a row as soon as its text is a loop, by one stated rule:

    a row's text is a **loop** when its last ``MIN_SPAN`` or more text tokens (timestamps and special tokens left
    out) are copies of one cycle of 1 to ``MAX_PERIOD`` tokens, ``MIN_COPIES`` copies at least.

``MIN_SPAN`` (48 tokens, about 35 words) is more repetition than speech holds in one 30 s window except where the
audio itself repeats one word or phrase that often, and such text fails the compression-ratio rule anyway (48
tokens of one cycle compress more than 2.4 times). A row found looping is ended there (its end-of-text is forced;
the tokens it has are kept), the decoding policy treats the decode as a failed one (the next temperature is tried,
as for a high compression ratio), and a window whose every attempt failed carries a warning in the transcript.

:func:`trailing_loop` is the rule; :class:`LoopGuard` applies it to a search's rows every few steps (the lean loop
and the generate backend's logits processor use the same guard).
"""

from __future__ import annotations

from typing import Sequence

MIN_SPAN = 48  # text tokens the repeated tail covers at least
MIN_COPIES = 4  # copies of the cycle at least (a long cycle needs more than MIN_SPAN tokens)
MAX_PERIOD = 24  # tokens per cycle at most
CHECK_EVERY = 8  # decoding steps between two checks of a search's rows


def trailing_loop(text: Sequence[int]) -> tuple[int, int] | None:
    """(period, copies) when ``text`` (text tokens only) ends in a loop by the rule above, else None. The
    shortest period that qualifies; copies counts the whole repeated tail."""
    n = len(text)
    if n < MIN_SPAN:
        return None
    tail = list(text[-MIN_SPAN:])
    if len(set(tail)) > MAX_PERIOD:  # a cycle of p tokens has at most p distinct ones
        return None
    seq = list(text)
    for period in range(1, MAX_PERIOD + 1):
        need = max(MIN_SPAN, MIN_COPIES * period)
        if need > n:
            break
        if seq[n - need : n - period] == seq[n - need + period : n]:
            start = n - need
            while start > 0 and seq[start - 1] == seq[start - 1 + period]:
                start -= 1
            return period, (n - start) // period
    return None


class LoopGuard:
    """Stops looping rows of a search: :meth:`looping` says which rows' text is a loop (checked every
    ``CHECK_EVERY`` steps). ``text_below``: token ids below it are text (Whisper's end-of-text id: every special
    and timestamp token comes after it)."""

    every = CHECK_EVERY

    def __init__(self, text_below: int):
        self.text_below = text_below

    def due(self, step: int) -> bool:
        return step > 0 and step % self.every == 0

    def looping(self, rows: Sequence[Sequence[int]]) -> list[int]:
        """Indices of ``rows`` (each a row's generated tokens so far) whose text is a loop."""
        out = []
        for i, row in enumerate(rows):
            if len(row) < MIN_SPAN:
                continue
            if trailing_loop(self.text_of(row)) is not None:
                out.append(i)
        return out

    def text_of(self, row: Sequence[int]) -> list[int]:
        """The text tokens of ``row`` (timestamps, end-of-text and padding left out)."""
        return [t for t in row if t < self.text_below]


PHRASE_WORDS = 4  # repeated_share: phrases of 1 to this many words
PHRASE_COPIES = 3  # ... repeated this many times in a row at least


def repeated_share(text: str) -> float:
    """The share of ``text``'s words (0 to 1) that lie in a run of one phrase of 1 to ``PHRASE_WORDS`` words
    repeated ``PHRASE_COPIES`` times or more in a row (case and punctuation ignored): about 0 for speech, near 1
    for a loop. The repetition score of segments and transcripts."""
    words = ["".join(ch for ch in w.lower() if ch.isalnum()) for w in text.split()]
    n = len(words)
    covered = [False] * n
    for period in range(1, PHRASE_WORDS + 1):
        run = 0  # consecutive positions j with words[j] == words[j + period]
        for j in range(n - period + 1):
            same = j + period < n and words[j] == words[j + period] and words[j] != ""
            if same:
                run += 1
                continue
            if run >= (PHRASE_COPIES - 1) * period:  # positions j - run … j - 1 match: the run spans run + period words
                for k in range(j - run, j + period):
                    covered[k] = True
            run = 0
    return round(sum(covered) / n, 3) if n else 0.0
