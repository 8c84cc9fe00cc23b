"""Whisper's decoding loop, lean: transformers' ``generate()`` rules without its per-step overhead; greedy and beam.

On a CPU, tiny.en's decoder step for 8 windows is about 10 ms of arithmetic, but ``generate()`` spent about
25 ms on it: a growing key/value cache re-concatenated every step, ``torch.isin`` over the 51k vocabulary for
each suppress list at every step, the timestamp rules walked row by row in Python, and the module and cache
machinery around each layer; its beam search also copied every window's cross-attention keys and values for
each beam. This loop calls the model's own layers (so int8 Linears, layer norms and weights are exactly the
model's) with:

- self-attention keys/values written into buffers allocated once per batch, and with int8 the query, key and
  value projections stacked into one Linear (one call instead of three per layer and step; the same numbers);
- cross-attention keys/values computed once per window from the encoder output and shared by its beams: the
  beams' queries attend to them together, as extra query rows (:meth:`LeanDecoder._cross`);
- the suppress lists turned into index tensors once, and the timestamp rules of
  ``WhisperTimeStampLogitsProcessor`` kept as per-row state (last token, previous token, last timestamp) and
  applied as whole-batch tensor operations over the timestamp tokens only (no vocabulary-wide masks or softmax);
- greedy rows that end leaving the batch once a quarter of it has ended: the decoder step is bound by reading
  each row's cross-attention keys/values, and on a folder of short clips a third of the row-steps were rows
  already done.

:meth:`LeanDecoder.greedy` mirrors the order of transformers' processors (begin-suppress, suppress, timestamps)
and produces the tokens ``generate()`` produces (``tests/test_fast_paths.py``); at a temperature above 0 it
samples (the fallback passes of the decoding policy). :meth:`LeanDecoder.beam` is
openai-whisper's beam search (the one faster-whisper's CTranslate2 runs as well): each window keeps
``beam_size`` hypotheses ranked by the sum of their tokens' log-probabilities after the logit rules, each
expanded by its ``beam_size + 1`` best tokens; hypotheses that end collect until ``beam_size`` have finished,
and the window's result is the finished one with the best log-probability per token. A finished window's beams
keep being fed until the whole batch is done (their tokens are ignored): the shapes stay fixed. The engine checks
eligibility (:func:`supported`) and otherwise uses ``generate()``.
"""

from __future__ import annotations

from typing import Any, Sequence

NEG_INF = float("-inf")


def supported(model: Any, attention: str) -> bool:
    """Whether this loop can run ``model`` (a transformers Whisper model) with attention ``attention``."""
    try:
        decoder = model.get_decoder()
        layer = decoder.layers[0]
        parts = (layer.self_attn.q_proj, layer.encoder_attn.k_proj, layer.fc1, decoder.embed_positions, model.proj_out)
    except (AttributeError, IndexError, TypeError):
        return False
    return attention in ("eager", "sdpa") and all(p is not None for p in parts)


class LeanDecoder:
    def __init__(self, model: Any, attention: str):
        import torch

        gen = model.generation_config
        decoder = model.get_decoder()
        self.attention = attention
        self.layers = list(decoder.layers)
        self.qkv = [_stacked((l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj)) for l in self.layers]
        self.embed_tokens = decoder.embed_tokens
        self.positions = decoder.embed_positions.weight
        self.final_norm = decoder.layer_norm
        self.proj_out = model.proj_out
        self.heads = self.layers[0].self_attn.num_heads
        self.head_dim = self.layers[0].self_attn.head_dim
        self.eos = int(gen.eos_token_id)
        self.pad = int(gen.pad_token_id) if gen.pad_token_id is not None else self.eos
        self.no_timestamps = int(gen.no_timestamps_token_id)
        self.timestamp_begin = self.no_timestamps + 1
        self.max_initial = getattr(gen, "max_initial_timestamp_index", None)
        self.max_length = int(gen.max_length or model.config.max_target_positions)
        vocab = int(self.embed_tokens.weight.shape[0])
        device = self.embed_tokens.weight.device
        # token ids, not vocabulary-wide masks: index_fill_ touches only them (13x faster than masked_fill_ here)
        self.suppress = torch.tensor(sorted({t for t in gen.suppress_tokens or () if 0 <= t < vocab}), dtype=torch.long, device=device)
        self.begin_suppress = torch.tensor(sorted({t for t in gen.begin_suppress_tokens or () if 0 <= t < vocab}),
                                           dtype=torch.long, device=device)
        # the ids of the timestamp tokens (up to the logits' width), for the rule that timestamps never go back
        self.timestamp_ids = torch.arange(self.timestamp_begin, int(self.proj_out.out_features), device=device)

    # ----------------------------------------------------------------- attention
    def _attend(self, q, k, v, causal: bool):
        import torch

        if self.attention == "sdpa":
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1.0)
        weights = torch.matmul(q, k.transpose(2, 3))
        if causal:
            n = q.shape[2]
            mask = torch.ones(n, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - n)
            weights = weights.masked_fill(~mask, NEG_INF)
        return torch.matmul(torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype), v)

    def _split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2).contiguous()

    def _cross(self, q, ck, cv, beams: int):
        """Cross-attention of ``q`` (windows x beams rows, heads, n, dim) to each window's shared keys/values."""
        if beams == 1:
            return self._attend(q, ck, cv, causal=False)
        rows, heads, n, dim = q.shape
        windows = rows // beams
        # every query attends on its own (no mask): a window's beams become extra query positions of the window
        q = q.view(windows, beams, heads, n, dim).permute(0, 2, 1, 3, 4).reshape(windows, heads, beams * n, dim)
        o = self._attend(q, ck, cv, causal=False)
        return o.view(windows, heads, beams, n, dim).permute(0, 2, 1, 3, 4).reshape(rows, heads, n, dim)

    def _cross_cache(self, encoder_hidden):
        return [(self._split(layer.encoder_attn.k_proj(encoder_hidden)), self._split(layer.encoder_attn.v_proj(encoder_hidden)))
                for layer in self.layers]

    def _forward(self, tokens, pos: int, keys, values, cross, beams: int = 1):
        """Run the decoder layers over ``tokens`` (rows, n) at positions ``pos``…; writes the self-attention
        keys/values into ``keys``/``values``; returns the final hidden states (rows, n, dim)."""
        rows, n = tokens.shape
        hidden = self.embed_tokens(tokens) + self.positions[pos : pos + n]
        for layer, qkv, k_cache, v_cache, (ck, cv) in zip(self.layers, self.qkv, keys, values, cross):
            att = layer.self_attn
            x = layer.self_attn_layer_norm(hidden)
            if qkv is not None:
                q, k, v = qkv(x).chunk(3, dim=-1)
            else:
                q, k, v = att.q_proj(x), att.k_proj(x), att.v_proj(x)
            q = self._split(q * att.scaling)
            k_cache[:, :, pos : pos + n] = self._split(k)
            v_cache[:, :, pos : pos + n] = self._split(v)
            o = self._attend(q, k_cache[:, :, : pos + n], v_cache[:, :, : pos + n], causal=n > 1)
            hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(rows, n, -1))
            att = layer.encoder_attn
            x = layer.encoder_attn_layer_norm(hidden)
            o = self._cross(self._split(att.q_proj(x) * att.scaling), ck, cv, beams)
            hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(rows, n, -1))
            x = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
        return hidden

    def _buffers(self, rows: int, capacity: int, like):
        import torch

        keys = [torch.empty(rows, self.heads, capacity, self.head_dim, device=like.device, dtype=like.dtype) for _ in self.layers]
        return keys, [torch.empty_like(k) for k in keys]

    def _max_len(self, prompt_len: int, max_new_tokens: int | None) -> int:
        """Prompt plus generated tokens stop here (generate()'s max_length, capped by ``max_new_tokens``)."""
        return self.max_length if max_new_tokens is None else min(self.max_length, prompt_len + max_new_tokens)

    @staticmethod
    def _room(keys, values, capacity: int, needed: int, max_len: int):
        """The self-attention buffers with room for ``needed`` positions: doubled (up to ``max_len``) when full."""
        if needed > capacity:
            capacity = min(max_len, 2 * capacity)
            keys = [_grown(c, capacity) for c in keys]
            values = [_grown(c, capacity) for c in values]
        return keys, values, capacity

    def _rules(self, scores, step: int, min_new_tokens: int, timestamps: bool, state) -> None:
        """The logit rules, in transformers' order: begin-suppress, suppress, end-of-text floor, timestamps."""
        if step == 0:
            scores.index_fill_(1, self.begin_suppress, NEG_INF)
        scores.index_fill_(1, self.suppress, NEG_INF)
        if step < min_new_tokens:
            scores[:, self.eos] = NEG_INF
        if timestamps:
            self._timestamp_rules(scores, step, *state)

    def _no_speech(self, hidden, scores, n: int, no_speech_id: int | None, sot_index: int) -> list[float] | None:
        import torch

        if no_speech_id is None:
            return None
        first = scores if n == 1 else self.proj_out(self.final_norm(hidden[:, sot_index : sot_index + 1]))[:, 0].float()
        return torch.softmax(first, dim=-1)[:, no_speech_id].tolist()

    def first_logits(self, encoder_hidden: Any, token: int) -> Any:
        """The logits (rows, vocabulary) of the token after ``token`` alone: language detection's one step."""
        import torch

        rows = encoder_hidden.shape[0]
        keys, values = self._buffers(rows, 1, encoder_hidden)
        tokens = torch.full((rows, 1), token, dtype=torch.long, device=encoder_hidden.device)
        hidden = self._forward(tokens, 0, keys, values, self._cross_cache(encoder_hidden))
        return self.proj_out(self.final_norm(hidden[:, -1:]))[:, 0].float()

    # -------------------------------------------------------------------- greedy
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
        included."""
        import torch

        batch, prompt_len = len(prompts), len(prompts[0])
        device = encoder_hidden.device
        max_len = self._max_len(prompt_len, max_new_tokens)
        if prompt_len >= max_len:
            return [[] for _ in prompts], None, [0.0] * batch
        cross = self._cross_cache(encoder_hidden)
        # Self-attention keys/values: room for 128 tokens, doubled when a window needs more (most need fewer).
        capacity = min(max_len, prompt_len + 128)
        keys, values = self._buffers(batch, capacity, encoder_hidden)

        tokens = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=device)
        generated = torch.full((batch, max_len - prompt_len), self.pad, dtype=torch.long, device=device)
        live = torch.arange(batch, device=device)  # the rows in the batch (finished rows leave it)
        ended = torch.zeros(batch, dtype=torch.bool, device=device)  # which of them have ended
        state = _RuleState.start(batch, device)
        draws = _RowDraws(seeds if seeds is not None else range(batch), device) if temperature > 0 else None
        no_speech: list[float] | None = None
        sum_logprobs = torch.zeros(batch, dtype=torch.float32, device=device)
        pos = 0
        steps = 0
        for step in range(max_len - prompt_len):  # generate() stops when prompt + generated reach max_length
            n = tokens.shape[1]
            keys, values, capacity = self._room(keys, values, capacity, pos + n, max_len)
            hidden = self._forward(tokens, pos, keys, values, cross)
            pos += n
            scores = self.proj_out(self.final_norm(hidden[:, -1:]))[:, 0].float()
            if step == 0:
                no_speech = self._no_speech(hidden, scores, n, no_speech_id, sot_index)
            # log-probabilities of the model's own distribution (before the rules below), as a teacher-forced pass
            # over the tokens computes them: the decoding policy judges every decoding path by the same measure
            logprobs = torch.log_softmax(scores, dim=-1)
            self._rules(scores, step, min_new_tokens, timestamps, state.args())
            if draws is not None:
                nxt = draws.sample(scores, temperature)
            else:
                nxt = torch.argmax(scores, dim=-1)
            nxt = torch.where(ended, torch.full_like(nxt, self.pad), nxt)
            chosen = logprobs.gather(1, nxt[:, None])[:, 0]
            sum_logprobs[live] += torch.where(ended, torch.zeros_like(chosen), chosen)
            generated[live, step] = nxt
            steps = step + 1
            state.advance(nxt, self.timestamp_begin if timestamps else None)
            ended |= nxt == self.eos
            alive = len(live) - int(ended.sum())
            if alive == 0:
                break
            if 4 * alive <= 3 * len(live):
                # A quarter or more of the rows ended: they leave the batch. Every row's numbers are its own (int8
                # inputs are scaled row by row, attention is per row), so the others' tokens do not change; each
                # row dropped saves reading its cross-attention keys/values (18 MB per step for tiny.en) at every
                # step left, for one copy of the remaining rows' caches.
                keep = (~ended).nonzero()[:, 0]
                live, nxt, ended = live[keep], nxt[keep], ended[keep]
                cross = [(ck.index_select(0, keep), cv.index_select(0, keep)) for ck, cv in cross]
                keys = [c.index_select(0, keep) for c in keys]
                values = [c.index_select(0, keep) for c in values]
                state.reorder(keep)
                if draws is not None:
                    draws.keep(keep)
            tokens = nxt[:, None]
        rows = generated[:, :steps].tolist()
        out = []
        for row in rows:
            if self.eos in row:
                row = row[: row.index(self.eos) + 1]
            out.append(row)
        return out, no_speech, sum_logprobs.tolist()

    # ---------------------------------------------------------------------- beam
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
    ) -> tuple[list[list[int]], list[float] | None, list[float]]:
        """Beam search over each row of ``encoder_hidden``; returns what :meth:`greedy` returns, for the
        chosen hypothesis of each window (its tokens end with end-of-text when it finished)."""
        import torch

        windows, prompt_len = len(prompts), len(prompts[0])
        k = beam_size
        rows = windows * k
        device = encoder_hidden.device
        max_len = self._max_len(prompt_len, max_new_tokens)
        if prompt_len >= max_len:
            return [[] for _ in prompts], None, [0.0] * windows
        cross = self._cross_cache(encoder_hidden)  # one copy per window, shared by its beams
        capacity = min(max_len, prompt_len + 128)
        keys, values = self._buffers(rows, capacity, encoder_hidden)
        # every beam starts as the prompt; only beam 0 of each window may expand at the first step
        tokens = torch.tensor([list(p) for p in prompts for _ in range(k)], dtype=torch.long, device=device)
        beam_scores = torch.full((rows,), NEG_INF, dtype=torch.float64)
        beam_scores[::k] = 0.0
        model_sums = torch.zeros(rows, dtype=torch.float64)  # the model's own log-probabilities (see greedy)
        history = torch.zeros((rows, 0), dtype=torch.long)
        state = _RuleState.start(rows, device)
        finished: list[list[tuple[float, float, list[int]]]] = [[] for _ in range(windows)]  # (score, model sum, ids)
        done = [False] * windows
        no_speech: list[float] | None = None
        pos = 0
        for step in range(max_len - prompt_len):
            n = tokens.shape[1]
            keys, values, capacity = self._room(keys, values, capacity, pos + n, max_len)
            hidden = self._forward(tokens, pos, keys, values, cross, beams=k)
            pos += n
            scores = self.proj_out(self.final_norm(hidden[:, -1:]))[:, 0].float()
            if step == 0:
                no_speech = self._no_speech(hidden, scores, n, no_speech_id, sot_index)
                no_speech = None if no_speech is None else no_speech[::k]
            model_lse = torch.logsumexp(scores, dim=-1)
            self._rules(scores, step, min_new_tokens, timestamps, state.args())
            search_lse = torch.logsumexp(scores, dim=-1)
            top_logits, top_ids = scores.topk(k + 1, dim=-1)  # the order within a row is the order of its log-probs
            cand_scores = (beam_scores[:, None] + (top_logits - search_lse[:, None]).double()).tolist()
            # the rules only ever set -inf, so a candidate's finite ruled logit is the model's own logit
            cand_model = (model_sums[:, None] + (top_logits - model_lse[:, None]).double()).tolist()
            top_ids_list = top_ids.tolist()
            hist = None  # the hypotheses' tokens, read only when one of them ends
            source, chosen, new_scores, new_model = [], [], [], []
            for w in range(windows):
                base = w * k
                if done[w]:  # keep feeding the finished window's rows unchanged (fixed shapes)
                    source += range(base, base + k)
                    chosen += [self.eos] * k
                    new_scores += [NEG_INF] * k
                    new_model += [0.0] * k
                    continue
                candidates = sorted(
                    ((cand_scores[r][j], r, j) for r in range(base, base + k) for j in range(k + 1)
                     if cand_scores[r][j] > NEG_INF), reverse=True)
                kept = 0
                for score, r, j in candidates:
                    tok = top_ids_list[r][j]
                    if tok == self.eos:
                        if len(finished[w]) < k:
                            hist = history.tolist() if hist is None else hist
                            finished[w].append((score, cand_model[r][j], hist[r] + [tok]))
                        continue
                    source.append(r)
                    chosen.append(tok)
                    new_scores.append(score)
                    new_model.append(cand_model[r][j])
                    kept += 1
                    if kept == k:
                        break
                while kept < k:  # fewer finite candidates than beams: pad with dead beams
                    source.append(base)
                    chosen.append(self.pad)
                    new_scores.append(NEG_INF)
                    new_model.append(0.0)
                    kept += 1
                if len(finished[w]) >= k:
                    done[w] = True
            if all(done):
                break
            index = torch.tensor(source, dtype=torch.long, device=device)
            nxt = torch.tensor(chosen, dtype=torch.long, device=device)
            keys = [c.index_select(0, index) for c in keys]
            values = [c.index_select(0, index) for c in values]
            history = torch.cat([history.index_select(0, index.cpu()), nxt.cpu()[:, None]], dim=1)
            beam_scores = torch.tensor(new_scores, dtype=torch.float64)
            model_sums = torch.tensor(new_model, dtype=torch.float64)
            state.reorder(index)
            state.advance(nxt, self.timestamp_begin if timestamps else None)
            tokens = nxt[:, None]
        hist = history.tolist()
        scores_list, model_list = beam_scores.tolist(), model_sums.tolist()
        out, sums = [], []
        for w in range(windows):
            pool = list(finished[w])
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
        return out, no_speech, sums

    def _timestamp_rules(self, scores, step: int, last, before, last_timestamp) -> None:
        """``WhisperTimeStampLogitsProcessor`` for every row at once (greedy, sampled and beam rows alike)."""
        import torch

        tb = self.timestamp_begin
        scores[:, self.no_timestamps] = NEG_INF
        stamps = scores[:, tb:]  # a view: the rules below write through it
        if step >= 1:
            last_ts = last >= tb
            before_ts = (before >= tb) if step >= 2 else torch.ones_like(last_ts)
            stamps.masked_fill_((last_ts & before_ts)[:, None], NEG_INF)  # a pair closed: text next
            scores[:, : self.eos].masked_fill_((last_ts & ~before_ts)[:, None], NEG_INF)  # a pair open: close it
            seen = last_timestamp >= 0
            floor = torch.where(last_ts & ~before_ts, last_timestamp, last_timestamp + 1)
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

    # --------------------------------------------------------------- word timing
    def cross_attention(self, encoder_hidden: Any, tokens: Any, heads: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
        """One teacher-forced pass over ``tokens`` (rows, n: each row's known sequence, right-padded; the decoder is
        causal, so padding never reaches the positions before it), for word timing, as openai-whisper's
        ``timing.py`` hooks the model it decoded with. Returns the final hidden states (rows, n, dim), layer-normed
        as :attr:`proj_out` takes them, and the cross-attention weights of the alignment ``heads`` ((layer, head)
        pairs), softmax(QK^T) in fp32: (rows, len(heads), n, frames).

        The pass is :meth:`_forward`'s, so its numbers are the decoding's whatever the attention kernel (SDPA never
        materialises weights): a forward hook keeps each alignment layer's cross-attention queries, and the chosen
        heads' weights are computed from them and those heads' keys. Each layer's cross-attention keys/values are
        computed as the pass reaches the layer (``_forward`` takes them in order), so at most two layers' are held,
        not every layer's as a decoding pass holds them."""
        import torch

        rows, n = tokens.shape
        chosen: dict[int, list[int]] = {}
        for layer, head in heads:
            chosen.setdefault(layer, []).append(head)
        queries: dict[int, Any] = {}
        head_keys: dict[int, Any] = {}

        def cross():
            for index, layer in enumerate(self.layers):
                k = self._split(layer.encoder_attn.k_proj(encoder_hidden))
                if index in chosen:
                    head_keys[index] = k[:, chosen[index]]  # a copy: the layer's keys go when the pass moves on
                yield k, self._split(layer.encoder_attn.v_proj(encoder_hidden))

        def keep(layer: int):
            return lambda module, args, out: queries.__setitem__(layer, out)

        hooks = [self.layers[layer].encoder_attn.q_proj.register_forward_hook(keep(layer)) for layer in chosen]
        try:
            keys, values = self._buffers(rows, n, encoder_hidden)
            hidden = self._forward(tokens, 0, keys, values, cross())
        finally:
            for hook in hooks:
                hook.remove()
        weights = {}
        for layer, layer_heads in chosen.items():
            q = self._split(queries.pop(layer))[:, layer_heads].float() * self.layers[layer].encoder_attn.scaling
            k = head_keys.pop(layer).float()
            for head, w in zip(layer_heads, torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1).unbind(1)):
                weights[layer, head] = w
        return self.final_norm(hidden), torch.stack([weights[layer, head] for layer, head in heads], dim=1)


class _RowDraws:
    """Sampling with one generator per row: a row's draws depend on its seed alone, not on its batch."""

    def __init__(self, seeds: Sequence[int], device):
        import torch

        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def sample(self, scores, temperature: float):
        """One token per row from softmax(scores / temperature): the Gumbel-max form (argmax of the scaled scores
        minus the log of Exp(1) noise), whose noise each row draws from its own generator."""
        import torch

        noise = torch.stack([torch.empty(scores.shape[1], device=scores.device).exponential_(generator=g)
                             for g in self.generators])
        return torch.argmax(scores / temperature - noise.log(), dim=-1)

    def keep(self, index) -> None:
        self.generators = [self.generators[i] for i in index.tolist()]


class _RuleState:
    """Per-row state of the timestamp rules: last generated token, the one before it, the last timestamp."""

    def __init__(self, last, before, last_timestamp):
        self.last, self.before, self.last_timestamp = last, before, last_timestamp

    @classmethod
    def start(cls, rows: int, device) -> "_RuleState":
        import torch

        return cls(*(torch.full((rows,), -1, dtype=torch.long, device=device) for _ in range(3)))

    def args(self):
        return self.last, self.before, self.last_timestamp

    def advance(self, nxt, timestamp_begin: int | None) -> None:
        import torch

        if timestamp_begin is not None:
            self.last_timestamp = torch.where(nxt >= timestamp_begin, nxt, self.last_timestamp)
        self.before, self.last = self.last, nxt

    def reorder(self, index) -> None:
        self.last, self.before, self.last_timestamp = (t.index_select(0, index) for t in (self.last, self.before, self.last_timestamp))


def _stacked(projections) -> Any:
    """The self-attention's query, key and value projections as one int8 Linear (one call per step instead of
    three; the same numbers), where they are int8; else None."""
    from .int8 import DynamicInt8Linear

    if not all(type(p) is DynamicInt8Linear for p in projections):
        return None
    return DynamicInt8Linear.stacked(list(projections))


def _grown(cache: Any, capacity: int) -> Any:
    """``cache`` (batch, heads, length, dim) copied into a buffer with room for ``capacity`` positions."""
    import torch

    out = torch.empty(*cache.shape[:2], capacity, cache.shape[3], device=cache.device, dtype=cache.dtype)
    out[:, :, : cache.shape[2]] = cache
    return out
