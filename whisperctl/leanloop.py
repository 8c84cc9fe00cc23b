"""Whisper's decoding loop, lean: transformers' ``generate()`` rules without its per-step overhead.

On a CPU, tiny.en's decoder step for 8 windows is about 10 ms of arithmetic, but ``generate()`` spent about
25 ms on it: a growing key/value cache re-concatenated every step, ``torch.isin`` over the 51k vocabulary for
each suppress list at every step, the timestamp rules walked row by row in Python, and the module and cache
machinery around each layer; its beam search also copied every window's cross-attention keys and values for
each beam. This loop is three parts around one step loop (:meth:`LeanDecoder._run`):

- the decoder step (:mod:`whisperctl.leanstep`): the model's own layers over key/value buffers allocated once
  per pass, cross-attention keys/values computed once per window and shared by its beams;
- the logit rules (:mod:`whisperctl.leanrules`): the suppress lists and the timestamp rules as whole-batch tensor
  operations over per-row state;
- the search (:mod:`whisperctl.leansearch`): greedy, sampled or openai-whisper's beam search, each a strategy
  that sees the scores and says which rows continue with which tokens.

:meth:`LeanDecoder.greedy` mirrors the order of transformers' processors (begin-suppress, suppress, timestamps)
and produces the tokens ``generate()`` produces (``tests/test_fast_paths.py``). The loop runs on any device and
in any float dtype (tensors follow the encoder output's); the caller checks eligibility (:func:`supported`).
"""

from __future__ import annotations

from typing import Any, Sequence

from .leanrules import LogitRules, RuleState
from .leansearch import BeamSearch, GreedySearch
from .repetition import LoopGuard
from .leanstep import DecoderStep, SelfCache, select_rows

#: Greedy rows read which of them ended every this many steps on a GPU (each read waits for the device).
GPU_SYNC_EVERY = 4


def supported(model: Any, attention: str) -> bool:
    """Whether this loop can run ``model`` (a transformers or whisperctl.native Whisper model) with attention
    ``attention`` (eager or sdpa: the loop's own attention, whatever the encoder runs)."""
    try:
        decoder = model.get_decoder()
        layer = decoder.layers[0]
        parts = (layer.self_attn.q_proj, layer.encoder_attn.k_proj, layer.fc1, decoder.embed_positions, model.proj_out)
    except (AttributeError, IndexError, TypeError):
        return False
    return attention in ("eager", "sdpa") and all(p is not None for p in parts)


class LeanDecoder:
    """Greedy, sampled and beam search over one model's decoder, from the encoder output of a batch of windows."""

    def __init__(self, model: Any, attention: str):
        gen = model.generation_config
        self.step = DecoderStep(model, attention)
        self.eos = int(gen.eos_token_id)
        self.pad = int(gen.pad_token_id) if gen.pad_token_id is not None else self.eos
        self.max_length = int(gen.max_length or model.config.max_target_positions)
        weight = self.step.embed_tokens.weight
        self.rules = LogitRules(model, int(weight.shape[0]), int(self.step.proj_out.out_features), weight.device)
        self.sync_every = 1 if weight.device.type == "cpu" else GPU_SYNC_EVERY

    @property
    def proj_out(self) -> Any:
        """The model's output projection (hidden states to vocabulary logits)."""
        return self.step.proj_out

    # ------------------------------------------------------------------ searches
    def greedy(
        self,
        encoder_hidden: Any,
        prompts: Sequence[Sequence[int]],
        timestamps: bool,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        no_speech_id: int | None = None,
        sot_index: int = 0,
        temperature: float = 0.0,
        seeds: Sequence[int] | None = None,
        stop_loops: bool = False,
    ) -> tuple[list[list[int]], list[float] | None, list[float]]:
        """Greedy continuations of ``prompts`` (one per row of ``encoder_hidden``, all the same length); with
        ``temperature`` > 0, each token is sampled from the softmax of the ruled logits divided by it (transformers'
        order: logit rules, then the temperature), each row drawing from its own generator seeded by ``seeds[row]``
        (default: the row's index), so a row's text does not depend on the other rows of its batch.

        Returns each row's generated tokens, ending with end-of-text when the row finished (as the rows of
        ``generate()``'s output after the prompt, without trailing padding); given ``no_speech_id``, each
        row's probability of that token at the start-of-transcript position ``sot_index`` (openai-whisper's no-speech
        probability), read from the first step instead of a separate decoder pass; and each row's sum of the
        chosen tokens' log-probabilities under the model's distribution (before the logit rules), end-of-text
        included. ``stop_loops``: a row whose text becomes a repetition loop ends there
        (:mod:`whisperctl.repetition`)."""
        def search(width: int, device: Any) -> GreedySearch:
            return GreedySearch(self.eos, self.pad, prompts, width, device, temperature, seeds, self.sync_every)

        return self._run(search, encoder_hidden, prompts, timestamps, max_new_tokens, min_new_tokens, no_speech_id, sot_index,
                         stop_loops)

    def beam(
        self,
        encoder_hidden: Any,
        prompts: Sequence[Sequence[int]],
        timestamps: bool,
        beam_size: int,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        no_speech_id: int | None = None,
        sot_index: int = 0,
        stop_loops: bool = False,
    ) -> tuple[list[list[int]], list[float] | None, list[float]]:
        """Beam search over each row of ``encoder_hidden``; returns what :meth:`greedy` returns, for the
        chosen hypothesis of each window (its tokens end with end-of-text when it finished). ``stop_loops``: a
        hypothesis whose text becomes a repetition loop finishes there."""
        def search(width: int, device: Any) -> BeamSearch:
            return BeamSearch(self.eos, self.pad, beam_size, prompts, device)

        return self._run(search, encoder_hidden, prompts, timestamps, max_new_tokens, min_new_tokens, no_speech_id, sot_index,
                         stop_loops)

    def _run(self, make_search, encoder_hidden, prompts, timestamps: bool, max_new_tokens: int | None, min_new_tokens: int,
             no_speech_id: int | None, sot_index: int, stop_loops: bool = False,
             ) -> tuple[list[list[int]], list[float] | None, list[float]]:
        """The step loop every strategy shares: step, score, rule, choose, keep the chosen rows' state.
        ``make_search(width, device)`` builds the pass's strategy. With ``stop_loops``, every few steps the rows
        whose text is a repetition loop are given end-of-text."""
        import torch

        prompt_len = len(prompts[0])
        # generate()'s max_length, capped by max_new_tokens: prompt plus generated tokens stop there
        max_len = self.max_length if max_new_tokens is None else min(self.max_length, prompt_len + max_new_tokens)
        if prompt_len >= max_len:
            return [[] for _ in prompts], None, [0.0] * len(prompts)
        device = encoder_hidden.device
        cross = self.step.cross_cache(encoder_hidden)  # one copy per window, shared by its beams
        search = make_search(max_len - prompt_len, device)
        tokens = torch.tensor(search.rows, dtype=torch.long, device=device)
        cache = SelfCache(self.step, len(search.rows), prompt_len, max_len, encoder_hidden)
        state = RuleState(len(search.rows), self.rules.timestamp_begin, device) if timestamps else None
        no_speech = None
        guard = LoopGuard(self.eos) if stop_loops else None
        pos = 0
        for step in range(max_len - prompt_len):  # generate() stops when prompt + generated reach max_length
            n = tokens.shape[1]
            cache.room(pos + n)
            hidden = self.step.forward(tokens, pos, cache.keys, cache.values, cross, beams=search.beams)
            pos += n
            scores = self.step.logits(hidden)
            if step == 0:
                no_speech = self._no_speech(hidden, scores, n, no_speech_id, sot_index)
            search.observe(scores)
            self.rules.apply(scores, step, min_new_tokens, state)
            if guard is not None and guard.due(step):
                looping = guard.looping(search.histories())
                if looping:
                    scores[looping] = float("-inf")
                    scores[looping, self.eos] = 0.0
            choice = search.choose(scores, step)
            if choice.done:
                break
            if choice.rows is not None:
                cache.select(choice.rows, pos)
                if search.drops_rows:
                    cross = select_rows(cross, choice.rows)
                if state is not None:
                    state.select(choice.rows)
            if state is not None:
                state.advance(choice.tokens)
            tokens = choice.tokens[:, None]
        rows, sums = search.finish()
        return rows, search.per_window(no_speech), sums

    def _no_speech(self, hidden, scores, n: int, no_speech_id: int | None, sot_index: int) -> list[float] | None:
        import torch

        if no_speech_id is None:
            return None
        first = scores if n == 1 else self.step.logits(hidden[:, sot_index : sot_index + 1])
        return torch.softmax(first, dim=-1)[:, no_speech_id].tolist()

    def first_logits(self, encoder_hidden: Any, token: int) -> Any:
        """The logits (rows, vocabulary) of the token after ``token`` alone: language detection's one step."""
        import torch

        rows = encoder_hidden.shape[0]
        keys, values = self.step.buffers(rows, 1, encoder_hidden)
        tokens = torch.full((rows, 1), token, dtype=torch.long, device=encoder_hidden.device)
        hidden = self.step.forward(tokens, 0, keys, values, self.step.cross_cache(encoder_hidden))
        return self.step.logits(hidden)

    # --------------------------------------------------------------- word timing
    def cross_attention(self, encoder_hidden: Any, tokens: Any, heads: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
        """One teacher-forced pass over ``tokens`` (rows, n: each row's known sequence, right-padded; the decoder is
        causal, so padding never reaches the positions before it), for word timing, as openai-whisper's
        ``timing.py`` hooks the model it decoded with. Returns the final hidden states (rows, n, dim), layer-normed
        as :attr:`proj_out` takes them, and the cross-attention weights of the alignment ``heads`` ((layer, head)
        pairs), softmax(QK^T) in fp32: (rows, len(heads), n, frames).

        The pass is :meth:`DecoderStep.forward`'s, so its numbers are the decoding's whatever the attention kernel (SDPA never
        materialises weights): a forward hook keeps each alignment layer's cross-attention queries, and the chosen
        heads' weights are computed from them and those heads' keys. Each layer's cross-attention keys/values are
        computed as the pass reaches the layer (the step takes them in order), so at most two layers' are held,
        not every layer's as a decoding pass holds them."""
        import torch

        rows, n = tokens.shape
        chosen: dict[int, list[int]] = {}
        for layer, head in heads:
            chosen.setdefault(layer, []).append(head)
        queries: dict[int, Any] = {}
        head_keys: dict[int, Any] = {}

        def cross():
            for index, layer in enumerate(self.step.layers):
                k = self.step.split(layer.encoder_attn.k_proj(encoder_hidden))
                if index in chosen:
                    head_keys[index] = k[:, chosen[index]]  # a copy: the layer's keys go when the pass moves on
                yield k, self.step.split(layer.encoder_attn.v_proj(encoder_hidden))

        def keep(layer: int):
            return lambda module, args, out: queries.__setitem__(layer, out)

        hooks = [self.step.layers[layer].encoder_attn.q_proj.register_forward_hook(keep(layer)) for layer in chosen]
        try:
            keys, values = self.step.buffers(rows, n, encoder_hidden)
            hidden = self.step.forward(tokens, 0, keys, values, cross())
        finally:
            for hook in hooks:
                hook.remove()
        weights = {}
        for layer, layer_heads in chosen.items():
            q = self.step.split(queries.pop(layer))[:, layer_heads].float() * self.step.layers[layer].encoder_attn.scaling
            k = head_keys.pop(layer).float()
            for head, w in zip(layer_heads, torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1).unbind(1)):
                weights[layer, head] = w
        return self.step.final_norm(hidden), torch.stack([weights[layer, head] for layer, head in heads], dim=1)
