"""Word timing: DTW over the alignment heads' cross-attention, as openai-whisper does it.

Runs the decoder once over the known tokens with eager attention, because SDPA and flash kernels never
materialise attention weights; the model's own attention implementation is restored afterwards.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .longform import TIME_PRECISION


def token_timings(
    model: Any, features: Any, prefix: list[int], tokens: list[int], eos_id: int, seconds: float, attention: str
) -> list[tuple[float, float, float]]:
    """(start, end, probability) in seconds from the window start, one per token of ``tokens``."""
    import torch
    from librosa.sequence import dtw
    from scipy.ndimage import median_filter

    if not tokens:
        return []
    heads = getattr(model.generation_config, "alignment_heads", None) or []
    seq = torch.tensor([prefix + tokens + [eos_id]], device=features.device)
    switch = attention != "eager" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            out = model(input_features=features, decoder_input_ids=seq, output_attentions=True)
    finally:
        if switch:
            model.set_attn_implementation(attention)
    n_frames = max(1, min(1500, int(round(seconds / TIME_PRECISION))))
    weights = torch.stack([out.cross_attentions[layer][0, head] for layer, head in heads]).float()
    weights = weights[:, :, :n_frames].cpu().numpy()
    std = weights.std(axis=-2, keepdims=True) + 1e-10
    weights = (weights - weights.mean(axis=-2, keepdims=True)) / std
    weights = median_filter(weights, size=(1, 1, 7), mode="nearest")
    matrix = weights.mean(axis=0)[len(prefix) - 1 : -1]  # the no-timestamps row + one row per text token
    _, path = dtw(C=-matrix.astype(np.float64), backtrack=True)
    path = path[::-1]
    text_idx, time_idx = path[:, 0], path[:, 1]
    jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
    jump_times = np.append(time_idx[jumps] * TIME_PRECISION, n_frames * TIME_PRECISION)
    logits = out.logits[0, len(prefix) - 1 : len(prefix) - 1 + len(tokens)].float()
    probs = torch.softmax(logits, dim=-1)[torch.arange(len(tokens)), torch.tensor(tokens)].cpu().numpy()
    return [(float(jump_times[i]), float(jump_times[i + 1]), float(probs[i])) for i in range(len(tokens))]


def align_window(loaded: Any, samples: np.ndarray, timed: list, window_start: float, language: str | None, task: Any) -> None:
    """Set measured times and probabilities on the timed tokens ``timed`` decoded from ``samples`` (≤ 30 s)
    that start at ``window_start`` seconds."""
    times = token_timings(
        loaded.model, loaded.features([samples]), loaded.prefix(language, task, timestamps=False), [t.id for t in timed],
        loaded.eos_id, len(samples) / 16_000, loaded.plan.attention.hf_name,
    )
    for tok, (s, e, p) in zip(timed, times):
        tok.start, tok.end, tok.probability = window_start + s, window_start + e, p
