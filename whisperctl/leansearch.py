"""The lean loop's search strategies: which token each row takes after the logit rules.

:class:`GreedySearch` takes each row's best token, or at a temperature above 0 samples it (the decoding policy's
fallback passes); it produces the tokens transformers' ``generate()`` produces (``tests/test_fast_paths.py``), and
rows that end leave the batch once a quarter of it has ended: the decoder step is bound by reading each row's
cross-attention keys/values, and on a folder of short clips a third of the row-steps were rows already done.

:class:`BeamSearch` is openai-whisper's beam search (the one faster-whisper's CTranslate2 runs as well): each
window keeps ``beam_size`` hypotheses ranked by the sum of their tokens' log-probabilities after the logit rules,
each expanded by its ``beam_size + 1`` best tokens; hypotheses that end collect until ``beam_size`` have
finished, and the window's result is the finished one with the best log-probability per token. A finished
window's beams keep being fed until the whole batch is done (their tokens are ignored): the shapes stay fixed.

Both keep each row's sum of its chosen tokens' log-probabilities under the model's own distribution (before the
logit rules), as a teacher-forced pass over the tokens computes them: the decoding policy judges every decoding
path by the same measure. A strategy sees scores; :class:`whisperctl.leanloop.LeanDecoder` runs the step. A
strategy is built complete for one pass (its prompts, width and device): ``rows`` is the decoder's first input.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

NEG_INF = float("-inf")


class Choice(NamedTuple):
    """A strategy's decision at one step."""

    tokens: Any  # (rows,) the next token of each row, in the order of ``rows``
    rows: Any  # None, or the rows (indices into this step's rows) that continue, in their new order
    done: bool  # every row has finished: the loop stops before feeding ``tokens``


class GreedySearch:
    """Greedy or sampled continuations, one row per window."""

    beams = 1
    drops_rows = True  # rows that leave take their cross-attention keys/values with them

    def __init__(self, eos: int, pad: int, prompts: Sequence[Sequence[int]], width: int, device: Any,
                 temperature: float = 0.0, seeds: Sequence[int] | None = None, sync_every: int = 1):
        """One pass over ``prompts`` (one row each), at most ``width`` new tokens per row, on ``device``."""
        import torch

        self.eos, self.pad = eos, pad
        self.temperature = temperature
        # how often the host reads which rows ended: every step on the CPU (free there), every few steps on a GPU,
        # where each read waits for the device (rows that ended meanwhile are fed padding, their tokens ignored)
        self.sync_every = sync_every
        batch = len(prompts)
        self.rows = [list(p) for p in prompts]  # the decoder's first input, row by row
        self.generated = torch.full((batch, width), pad, dtype=torch.long, device=device)
        self.live = torch.arange(batch, device=device)  # the rows in the batch (finished rows leave it)
        self.ended = torch.zeros(batch, dtype=torch.bool, device=device)  # which of them have ended
        self.sums = torch.zeros(batch, dtype=torch.float32, device=device)
        self.draws = RowDraws(seeds if seeds is not None else range(batch), device) if temperature > 0 else None
        self.steps = 0

    def observe(self, scores) -> None:
        import torch

        self.logprobs = torch.log_softmax(scores, dim=-1)

    def choose(self, scores, step: int) -> Choice:
        import torch

        nxt = self.draws.sample(scores, self.temperature) if self.draws is not None else torch.argmax(scores, dim=-1)
        nxt = torch.where(self.ended, torch.full_like(nxt, self.pad), nxt)
        chosen = self.logprobs.gather(1, nxt[:, None])[:, 0]
        self.sums[self.live] += torch.where(self.ended, torch.zeros_like(chosen), chosen)
        self.generated[self.live, step] = nxt
        self.steps = step + 1
        self.ended |= nxt == self.eos
        if self.steps % self.sync_every:
            return Choice(nxt, None, False)
        alive = len(self.live) - int(self.ended.sum())
        if alive == 0:
            return Choice(nxt, None, True)
        if 4 * alive > 3 * len(self.live):
            return Choice(nxt, None, False)
        # A quarter or more of the rows ended: they leave the batch. Every row's numbers are its own (int8 inputs
        # are scaled row by row, attention is per row), so the others' tokens do not change; each row dropped
        # saves reading its cross-attention keys/values (18 MB per step for tiny.en) at every step left, for one
        # copy of the remaining rows' caches.
        keep = (~self.ended).nonzero()[:, 0]
        self.live, self.ended = self.live[keep], self.ended[keep]
        if self.draws is not None:
            self.draws.keep(keep)
        return Choice(nxt[keep], keep, False)

    def per_window(self, values: list[float] | None) -> list[float] | None:
        return values

    def histories(self) -> list[list[int]]:
        """Each current row's generated tokens so far (rows that ended: up to padding)."""
        return self.generated[self.live, : self.steps].tolist()

    def finish(self) -> tuple[list[list[int]], list[float]]:
        out = []
        for row in self.generated[:, : self.steps].tolist():
            if self.eos in row:
                row = row[: row.index(self.eos) + 1]
            out.append(row)
        return out, self.sums.tolist()


class BeamSearch:
    """openai-whisper's beam search: ``beam_size`` rows per window."""

    drops_rows = False  # beams are reordered within their window; the windows' cross-attention stays

    def __init__(self, eos: int, pad: int, beam_size: int, prompts: Sequence[Sequence[int]], device: Any):
        """One pass over ``prompts`` (one window each, ``beam_size`` rows per window) on ``device``."""
        import torch

        self.eos, self.pad, self.beams = eos, pad, beam_size
        k = self.beams
        self.windows, self.device = len(prompts), device
        rows = self.windows * k
        # host-side bookkeeping (the choice of beams is a Python sort per window): on the CPU whatever the device
        self.beam_scores = torch.full((rows,), NEG_INF, dtype=torch.float64, device="cpu")
        self.beam_scores[::k] = 0.0  # every beam starts as the prompt; only beam 0 of each window may expand
        self.model_sums = torch.zeros(rows, dtype=torch.float64, device="cpu")  # the model's own log-probabilities
        self.history = torch.zeros((rows, 0), dtype=torch.long, device="cpu")
        self.finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(self.windows)]  # (score, model sum, ids)
        self.done = [False] * self.windows
        self.rows = [list(p) for p in prompts for _ in range(k)]  # the decoder's first input, row by row

    def observe(self, scores) -> None:
        import torch

        self.model_lse = torch.logsumexp(scores, dim=-1)

    def choose(self, scores, step: int) -> Choice:
        import torch

        k = self.beams
        search_lse = torch.logsumexp(scores, dim=-1)
        top_logits, top_ids = scores.topk(k + 1, dim=-1)  # the order within a row is the order of its log-probs
        self._cand_scores = (self.beam_scores[:, None] + (top_logits - search_lse[:, None]).double().cpu()).tolist()
        # the rules only ever set -inf, so a candidate's finite ruled logit is the model's own logit
        self._cand_model = (self.model_sums[:, None] + (top_logits - self.model_lse[:, None]).double().cpu()).tolist()
        self._top_ids = top_ids.tolist()
        self._hist = None  # the hypotheses' tokens, read only when one of them ends
        picks: list[tuple[int, int, float, float]] = []  # (source row, token, score, model sum) per new row
        for w in range(self.windows):
            picks += self._window_picks(w)
            if len(self.finished[w]) >= k:
                self.done[w] = True
        if all(self.done):
            return Choice(None, None, True)
        source, chosen, new_scores, new_model = zip(*picks)
        index = torch.tensor(source, dtype=torch.long, device=self.device)
        nxt = torch.tensor(chosen, dtype=torch.long, device=self.device)
        self.history = torch.cat([self.history.index_select(0, index.cpu()), nxt.cpu()[:, None]], dim=1)
        self.beam_scores = torch.tensor(new_scores, dtype=torch.float64, device="cpu")
        self.model_sums = torch.tensor(new_model, dtype=torch.float64, device="cpu")
        return Choice(nxt, index, False)

    def _window_picks(self, w: int) -> list[tuple[int, int, float, float]]:
        """Window ``w``'s next ``beam_size`` rows; its hypotheses that end join its finished ones."""
        k, base = self.beams, w * self.beams
        if self.done[w]:  # keep feeding the finished window's rows unchanged (fixed shapes)
            return [(r, self.eos, NEG_INF, 0.0) for r in range(base, base + k)]
        cand_scores = self._cand_scores
        candidates = sorted(((cand_scores[r][j], r, j) for r in range(base, base + k) for j in range(k + 1)
                             if cand_scores[r][j] > NEG_INF), reverse=True)
        picks = []
        for score, r, j in candidates:
            tok = self._top_ids[r][j]
            if tok == self.eos:
                if len(self.finished[w]) < k:
                    self._hist = self.history.tolist() if self._hist is None else self._hist
                    self.finished[w].append((score, self._cand_model[r][j], self._hist[r] + [tok]))
                continue
            picks.append((r, tok, score, self._cand_model[r][j]))
            if len(picks) == k:
                break
        # fewer finite candidates than beams: pad with dead beams
        return picks + [(base, self.pad, NEG_INF, 0.0)] * (k - len(picks))

    def per_window(self, values: list[float] | None) -> list[float] | None:
        return None if values is None else values[:: self.beams]

    def histories(self) -> list[list[int]]:
        """Each current row's (hypothesis's) generated tokens so far."""
        return self.history.tolist()

    def finish(self) -> tuple[list[list[int]], list[float]]:
        k = self.beams
        hist = self.history.tolist()
        scores_list, model_list = self.beam_scores.tolist(), self.model_sums.tolist()
        out, sums = [], []
        for w in range(self.windows):
            pool = list(self.finished[w])
            if len(pool) < k:  # the length limit came first: the live beams compete too, best first
                live = sorted(range(w * k, w * k + k), key=lambda r: scores_list[r], reverse=True)
                pool += [(scores_list[r], model_list[r], hist[r]) for r in live if scores_list[r] > NEG_INF][: k - len(pool)]
            if not pool:
                out.append([])
                sums.append(0.0)
                continue
            # openai-whisper's ranking without a length penalty: log-probability per generated token
            best = max(pool, key=lambda c: c[0] / max(1, len([t for t in c[2] if t != self.eos])))
            out.append(best[2])
            sums.append(best[1])
        return out, sums


class RowDraws:
    """Sampling with one generator per row: a row's draws depend on its seed alone, not on its batch."""

    def __init__(self, seeds: Sequence[int], device: Any):
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def sample(self, scores, temperature: float):
        """One token per row from softmax(scores / temperature): the Gumbel-max form (argmax of the scaled scores
        minus the log of Exp(1) noise), whose noise each row draws from its own generator."""
        import torch

        return torch.argmax(self.perturbed(scores, temperature), dim=-1)

    def perturbed(self, scores, temperature: float):
        """The scaled scores minus the log of each row's Exp(1) noise: their argmax is a draw (:meth:`sample`)."""
        import torch

        noise = torch.stack([torch.empty(scores.shape[1], dtype=scores.dtype, device=scores.device).exponential_(generator=g)
                             for g in self.generators])
        return scores / temperature - noise.log()

    def keep(self, index) -> None:
        self.generators = [self.generators[i] for i in index.tolist()]
