"""Word timing: DTW over the alignment heads' cross-attention, as openai-whisper does it.

One teacher-forced decoder pass over a batch of windows' known tokens, on the model that decoded them (the
backend's :meth:`~whisperctl.backends.Backend.cross_attention`: the lean loop's layers, over whisperctl's native
modules or transformers' model), reusing the encoder output decoding already computed; the
alignment heads' weights are computed in fp32 from the queries and keys of that pass. Where the time went before
(tiny.en, 2 cores): loading transformers' model a second time for its attention weights (import, weights,
quantization: 2-3 s and 350-460 MB of peak memory), earlier also the encoder re-run per window in eager attention,
and librosa's DTW compiling itself with numba on first use. The DTW here is numpy, vectorised along each row.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .longform import TIME_PRECISION  # seconds per encoder frame pair (Whisper's timestamp resolution)

MEDIAN_FILTER_WIDTH = 7  # openai-whisper's


def dtw_path(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost monotonic path through ``cost`` (rows: tokens, columns: frames) from (0, 0) to the end,
    steps right, down or diagonal, as openai-whisper's ``dtw``; returns (row indices, column indices)."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    for i in range(1, n + 1):
        # acc[i, j] = cost[i-1, j-1] + min(acc[i-1, j-1], acc[i-1, j], acc[i, j-1]). The left neighbour chains
        # along the row; unrolled with prefix sums P of the row's costs:
        # acc[i, j] = P[j] + min over k <= j of (d[k] - P[k-1]), d[k] = min(acc[i-1, k-1], acc[i-1, k]).
        prefix = np.concatenate([[0.0], np.cumsum(cost[i - 1])])
        d = np.minimum(acc[i - 1, :-1], acc[i - 1, 1:])
        acc[i, 1:] = prefix[1:] + np.minimum.accumulate(d - prefix[:-1])
    return _backtrack(acc)


def _backtrack(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    i, j = acc.shape[0] - 1, acc.shape[1] - 1
    rows, cols = [], []
    while i > 0 and j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diag < up and diag < left:  # openai-whisper's tie-breaking
            i, j = i - 1, j - 1
        elif up < diag and up < left:
            i -= 1
        else:
            j -= 1
    return np.array(rows[::-1]), np.array(cols[::-1])


def token_timings(
    loaded: Any, backend: Any, windows: Any, prefixes: Sequence[list[int]], token_lists: Sequence[list[int]],
    seconds: Sequence[float],
) -> list[list[tuple[float, float, float]]]:
    """(start, end, probability) in seconds from each window's start, one per token of ``token_lists[i]``
    (text tokens), for ``windows`` (:class:`whisperctl.backends.Windows`, encoded by ``backend``, the
    :class:`~whisperctl.backends.Backend` that decoded them) whose decoder prompt (no timestamps) is ``prefixes[i]``."""
    import torch

    heads = [(int(layer), int(head)) for layer, head in loaded.model.generation_config.alignment_heads or []]
    rows = [i for i, toks in enumerate(token_lists) if toks]
    out: list[list[tuple[float, float, float]]] = [[] for _ in token_lists]
    if not rows or not heads:
        return out
    seqs = [prefixes[i] + list(token_lists[i]) + [loaded.eos_id] for i in rows]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [loaded.eos_id] * (width - len(s)) for s in seqs], device=windows.features.device)
    with torch.inference_mode():
        states, weights_all = backend.cross_attention(windows.rows(rows), ids, heads)
    for b, i in enumerate(rows):
        tokens, prefix = list(token_lists[i]), prefixes[i]
        n_frames = max(1, min(weights_all.shape[-1], int(round(seconds[i] / TIME_PRECISION))))
        weights = _normalised_median(weights_all[b, :, : len(seqs[b]), :n_frames], MEDIAN_FILTER_WIDTH).cpu().numpy()
        matrix = weights.mean(axis=0)[len(prefix) - 1 : -1]  # the no-timestamps row + one row per text token
        text_idx, time_idx = dtw_path(-matrix.astype(np.float64))
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = np.append(time_idx[jumps] * TIME_PRECISION, n_frames * TIME_PRECISION)
        with torch.inference_mode():
            # only the text positions' logits: the full logits of 8 windows are 250 MB on tiny.en
            logits = backend.token_logits(states[b, len(prefix) - 1 : len(prefix) - 1 + len(tokens)]).float()
            probs = torch.softmax(logits, dim=-1)[torch.arange(len(tokens)), torch.tensor(tokens)].cpu().numpy()
        out[i] = [(float(jump_times[k]), float(jump_times[k + 1]), float(probs[k])) for k in range(len(tokens))]
    return out


def _normalised_median(weights: Any, width: int) -> Any:
    """(heads, tokens, frames): each frame normalised over the tokens, then a running median of ``width``
    frames with the edges repeated (scipy's median_filter with mode='nearest', as before)."""
    import torch

    weights = (weights - weights.mean(dim=-2, keepdim=True)) / (weights.std(dim=-2, keepdim=True, unbiased=False) + 1e-10)
    pad = width // 2
    padded = torch.nn.functional.pad(weights, (pad, pad), mode="replicate")
    frames = weights.shape[-1]
    # Elementwise min/max over the ``width`` shifted copies, one head at a time (its copies stay in the caches
    # and a window's do not add 40 MB to the peak), made contiguous first (strided copies ran 1.6-2x slower): for
    # width 7 the 13 compare-exchanges of a median-of-7 selection network (N. Devillard's opt_med7; checked on
    # every ordering of 7 values), else an odd-even transposition sort. Both are faster than torch's median or
    # sort over an unfolded view (measured: 4x, tiny.en).
    pairs = _MEDIAN_OF_7 if width == 7 else [(i, i + 1) for r in range(width) for i in range(r % 2, width - 1, 2)]
    out = torch.empty_like(weights)
    for head, rows in enumerate(padded):
        vals = [rows[..., i : i + frames].contiguous() for i in range(width)]
        for i, j in pairs:
            vals[i], vals[j] = torch.minimum(vals[i], vals[j]), torch.maximum(vals[i], vals[j])
        out[head] = vals[width // 2]
    return out

_MEDIAN_OF_7 = [(0, 5), (0, 3), (1, 6), (2, 4), (0, 1), (3, 5), (2, 6), (2, 3), (3, 6), (4, 5), (1, 4), (1, 3), (3, 4)]
