"""Segments Whisper likely invented in silence: openai-whisper's ``--hallucination_silence_threshold``.

A segment is *anomalous* when its first (up to) eight words look unlike speech: each word scores 1 when its
probability is below 0.15, up to 2 when it is shorter than 0.133 s (15 per second short), and 1 per second beyond
2 s; a segment whose words score ≥ 3 in total, or about 1 per word, is anomalous. An anomalous segment is dropped
when silence of more than the threshold lies before it (since the last kept speech, or it starts within the
threshold of the file's start) and after it (before the next segment's first word, or the next segment is itself
anomalous, or the file ends within 2 s — or more than the threshold — after it).

The same rule serves both chunking modes, on settled segments in the original file's time (after any VAD or
clip time mapping). openai-whisper, which decodes one window at a time, also judges segments near its window's
edges as bounded by silence and decodes the window again from the dropped segment; whisperctl's batched windows
are merged before segments exist, so it drops and does not re-decode.
"""

from __future__ import annotations

import logging
from typing import Iterable

from .results import Segment, Word

log = logging.getLogger(__name__)

PUNCTUATION = "\"'“¿([{-\"'.。,，!！?？:：”)]}、"  # openai-whisper's: not counted as words
END_MARGIN_S = 2.0  # openai-whisper: a segment this close to the end of the audio is followed by silence


def word_anomaly_score(word: Word) -> float:
    probability = word.probability if word.probability is not None else 0.0
    duration = word.end - word.start
    score = 0.0
    if probability < 0.15:
        score += 1.0
    if duration < 0.133:
        score += (0.133 - duration) * 15
    if duration > 2.0:
        score += duration - 2.0
    return score


def is_anomaly(segment: Segment | None) -> bool:
    if segment is None or not segment.words:
        return False
    words = [w for w in segment.words if not all(ch in PUNCTUATION for ch in w.word.strip())][:8]
    score = sum(word_anomaly_score(w) for w in words)
    return score >= 3 or score + 0.01 >= len(words)


class SilenceFilter:
    """Streams settled segments through the rule. A segment is released as soon as its fate is known: at once
    when it is not anomalous, else when the next segment with words arrives (or at :meth:`finish`)."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.dropped = 0
        self._last_speech = 0.0  # end of the last kept segment with words
        self._held: list[Segment] = []  # from the first undecided segment on

    def feed(self, segments: Iterable[Segment]) -> list[Segment]:
        self._held.extend(segments)
        return self._decide(end=None)

    def finish(self, end: float) -> list[Segment]:
        """The held segments, decided with the audio ending at ``end`` seconds."""
        return self._decide(end=end)

    def _decide(self, end: float | None) -> list[Segment]:
        out: list[Segment] = []
        while self._held:
            segment = self._held[0]
            if not segment.words:
                out.append(self._held.pop(0))
                continue
            start, stop = segment.words[0].start, segment.words[-1].end
            if is_anomaly(segment):
                after = next((s for s in self._held[1:] if s.words), None)
                if after is None and end is None:
                    break  # wait for the next segment with words
                silence_before = start - self._last_speech > self.threshold or start < self.threshold
                if after is not None:
                    silence_after = after.words[0].start - stop > self.threshold or is_anomaly(after)
                else:
                    silence_after = end - stop > self.threshold or end - stop < END_MARGIN_S
                if silence_before and silence_after:
                    log.debug("dropped a possible hallucination at %.2f-%.2f s: %r", start, stop, segment.text)
                    self.dropped += 1
                    self._held.pop(0)
                    continue
            self._last_speech = stop
            out.append(self._held.pop(0))
        return out
