"""Word error rate on Whisper's English normaliser, as the Open ASR Leaderboard computes it."""

from __future__ import annotations

import functools
from typing import Sequence


@functools.lru_cache(maxsize=1)
def _normalizer():
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    return EnglishTextNormalizer({})  # no British→American spelling map ships with transformers


_KEEP_BRACKETED = str.maketrans("()[]", "    ")


def normalize(text: str) -> str:
    return _normalizer()(text)


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER (0..1+) of hypotheses against references, both normalised first.

    The normaliser drops text in parentheses and brackets (a hypothesis's "(music)"); in a reference they hold
    words that were spoken (LJ001-0024: "(which also was printed at Maintz ...)"), so a reference keeps them.
    """
    import jiwer

    refs = [normalize(r.translate(_KEEP_BRACKETED)) for r in references]
    hyps = [normalize(h) for h in hypotheses]
    pairs = [(r, h) for r, h in zip(refs, hyps) if r.strip()]
    if not pairs:
        raise ValueError("no non-empty reference to score against")
    return float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs]))


def dropped_words(reference: str, hypothesis: str) -> list[str]:
    """The reference's words (normalised as :func:`wer` does) that the hypothesis deleted, in order."""
    import jiwer

    ref, hyp = normalize(reference.translate(_KEEP_BRACKETED)), normalize(hypothesis)
    if not ref.strip():
        return []
    if not hyp.strip():
        return ref.split()
    out = jiwer.process_words(ref, hyp)
    words = out.references[0]
    return [w for chunk in out.alignments[0] if chunk.type == "delete" for w in words[chunk.ref_start_idx:chunk.ref_end_idx]]
