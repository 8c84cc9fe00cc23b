"""The lean loop's logit rules: transformers' Whisper logits processors as whole-batch tensor operations.

The suppress lists are index tensors built once, and the timestamp rules of ``WhisperTimeStampLogitsProcessor``
keep per-row state (:class:`RuleState`: last token, previous token, last timestamp) and touch the timestamp
tokens only: no vocabulary-wide masks or softmax per step. Every search strategy (greedy, sampled, beam) applies
the same rules through :meth:`LogitRules.apply`.
"""

from __future__ import annotations

from typing import Any

NEG_INF = float("-inf")


class LogitRules:
    """The rules of one model's generation config, in transformers' order: begin-suppress, suppress, end-of-text
    floor, timestamps."""

    def __init__(self, model: Any, vocab: int, logits_width: int, device: Any):
        import torch

        gen = model.generation_config
        self.eos = int(gen.eos_token_id)
        self.no_timestamps = int(gen.no_timestamps_token_id)
        self.timestamp_begin = self.no_timestamps + 1
        self.max_initial = getattr(gen, "max_initial_timestamp_index", None)
        # token ids, not vocabulary-wide masks: index_fill_ touches only them (13x faster than masked_fill_ here)
        self.suppress = torch.tensor(sorted({t for t in gen.suppress_tokens or () if 0 <= t < vocab}), dtype=torch.long, device=device)
        self.begin_suppress = torch.tensor(sorted({t for t in gen.begin_suppress_tokens or () if 0 <= t < vocab}),
                                           dtype=torch.long, device=device)
        # the ids of the timestamp tokens (up to the logits' width), for the rule that timestamps never go back
        self.timestamp_ids = torch.arange(self.timestamp_begin, logits_width, device=device)

    def apply(self, scores, step: int, min_new_tokens: int, state: "RuleState | None") -> None:
        """Rule ``scores`` (rows, vocabulary, fp32) in place at generation step ``step``; ``state``: the rows'
        timestamp state, None for an untimed pass."""
        if step == 0:
            scores.index_fill_(1, self.begin_suppress, NEG_INF)
        scores.index_fill_(1, self.suppress, NEG_INF)
        if step < min_new_tokens:
            scores[:, self.eos] = NEG_INF
        if state is not None:
            self._timestamps(scores, step, state)

    def _timestamps(self, scores, step: int, state: "RuleState") -> None:
        """``WhisperTimeStampLogitsProcessor`` for every row at once (greedy, sampled and beam rows alike)."""
        import torch

        tb = self.timestamp_begin
        scores[:, self.no_timestamps] = NEG_INF
        stamps = scores[:, tb:]  # a view: the rules below write through it
        if step >= 1:
            last_ts = state.last >= tb
            before_ts = (state.before >= tb) if step >= 2 else torch.ones_like(last_ts)
            stamps.masked_fill_((last_ts & before_ts)[:, None], NEG_INF)  # a pair closed: text next
            scores[:, : self.eos].masked_fill_((last_ts & ~before_ts)[:, None], NEG_INF)  # a pair open: close it
            seen = state.last_timestamp >= 0
            floor = torch.where(last_ts & ~before_ts, state.last_timestamp, state.last_timestamp + 1)
            floor = torch.where(seen, floor, torch.full_like(floor, tb))
            stamps.masked_fill_(self.timestamp_ids < floor[:, None], NEG_INF)  # timestamps never go back
        else:
            scores[:, :tb] = NEG_INF
            if self.max_initial is not None:
                scores[:, tb + self.max_initial + 1 :] = NEG_INF
        # transformers compares the log-softmax's timestamp mass with its best text token; the normaliser is
        # common to both sides, so the raw scores give the same decision without a vocabulary-wide softmax
        timestamp_mass = stamps.logsumexp(dim=-1)
        text_max = scores[:, :tb].amax(dim=-1)
        scores[:, :tb].masked_fill_((timestamp_mass > text_max)[:, None], NEG_INF)


class RuleState:
    """Per-row state of the timestamp rules: last generated token, the one before it, the last timestamp."""

    def __init__(self, rows: int, timestamp_begin: int, device: Any):
        import torch

        self.timestamp_begin = timestamp_begin
        self.last, self.before, self.last_timestamp = (torch.full((rows,), -1, dtype=torch.long, device=device) for _ in range(3))

    def advance(self, nxt) -> None:
        import torch

        self.last_timestamp = torch.where(nxt >= self.timestamp_begin, nxt, self.last_timestamp)
        self.before, self.last = self.last, nxt

    def select(self, index) -> None:
        self.last, self.before, self.last_timestamp = (t.index_select(0, index) for t in (self.last, self.before, self.last_timestamp))
