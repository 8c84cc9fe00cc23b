"""The lean backend: whisperctl's decoding loop (:mod:`whisperctl.leanloop`) over the loaded model's own modules.

It runs whisperctl.native's modules on the CPU and transformers' model elsewhere, on any device and in any float
dtype, with eager or SDPA attention in the decoder (the encoder keeps the attention it was loaded with). Greedy,
beam and sampled passes, the no-speech probability and the log-probability sums all come from the loop itself,
language detection is its first step, and word timing is one forced pass of the same layers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from . import Found, Prompt, SearchOptions, Windows

if TYPE_CHECKING:
    from ..leanloop import LeanDecoder
    from ..loaded import LoadedModel


class LeanBackend:
    name = "lean"

    def __init__(self, loaded: "LoadedModel", loop: "LeanDecoder"):
        self.loaded = loaded
        self.loop = loop
        self._encoder = loaded.model.get_encoder()

    def _run_encoder(self, features: Any) -> Any:
        return self._encoder(features)[0]

    def encode(self, features: Any) -> Windows:
        # at once: language detection, the first pass and the fallback passes all read it
        return Windows(features, self._run_encoder, self._run_encoder(features))

    def search(self, windows: Windows, prompts: Sequence[Prompt], options: SearchOptions, task: str) -> Found:
        """One pass over rows whose prompts may differ in length: rows of one length decode together (the loop
        advances every row by one position per step), and the results come back in row order. In sequential
        decoding most prompts reach the same cap (half the decoder's positions) after a window or two, so the
        groups are few."""
        by_length: dict[int, list[int]] = {}
        for i, p in enumerate(prompts):
            by_length.setdefault(len(p.tokens), []).append(i)
        rows: list[list[int]] = [[] for _ in prompts]
        no_speech: list[float] | None = [0.0] * len(prompts) if self.loaded.no_speech_id is not None else None
        sums = [0.0] * len(prompts)
        for idx in by_length.values():
            got = self._search_rows(windows.rows(idx).hidden, [prompts[i] for i in idx], idx, options)
            for j, i in enumerate(idx):
                rows[i], sums[i] = got[0][j], got[2][j]
                if no_speech is not None and got[1] is not None:
                    no_speech[i] = got[1][j]
        return Found(rows, no_speech, sums)

    def _search_rows(self, hidden: Any, prompts: list[Prompt], idx: list[int], options: SearchOptions):
        full = [p.tokens for p in prompts]
        limits = dict(max_new_tokens=options.max_new_tokens, min_new_tokens=options.min_new_tokens,
                      no_speech_id=self.loaded.no_speech_id, sot_index=full[0].index(self.loaded.sot_id),
                      stop_loops=options.stop_loops)
        if options.temperature > 0:  # a sampled pass: each window draws from its own seeded generator
            seeds = [window_seed(options.seed, options.keys[i] if options.keys else i, options.temperature) for i in idx]
            return self.loop.greedy(hidden, full, options.timestamps, temperature=options.temperature, seeds=seeds, **limits)
        if options.beam_size == 1:
            return self.loop.greedy(hidden, full, options.timestamps, **limits)
        return self.loop.beam(hidden, full, options.timestamps, options.beam_size, **limits)

    def first_logits(self, windows: Windows, token: int) -> Any:
        return self.loop.first_logits(windows.hidden, token)

    def cross_attention(self, windows: Windows, tokens: Any, heads: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
        return self.loop.cross_attention(windows.hidden, tokens, heads)

    def token_logits(self, states: Any) -> Any:
        return self.loop.proj_out(states)


def window_seed(seed: int, key: int, temperature: float) -> int:
    """A sampled pass's seed for one window: the user's seed, the window's audio digest and the temperature."""
    return (seed * 1_000_003 + key * 101 + round(temperature * 100)) % (2**63)
