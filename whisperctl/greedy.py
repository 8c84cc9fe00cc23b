"""A lean batched greedy decoder for Whisper: transformers' ``generate()`` rules, without its per-step overhead.

On a CPU, tiny.en's decoder step for 8 windows is about 10 ms of arithmetic, but ``generate()`` spent about
25 ms on it: a growing key/value cache re-concatenated every step, ``torch.isin`` over the 51k vocabulary for
each suppress list at every step, the timestamp rules walked row by row in Python, and the module and cache
machinery around each layer. This loop calls the model's own layers (so dynamic int8 Linears, layer norms
and weights are exactly the model's) with:

- self-attention keys/values written into buffers allocated once per batch;
- cross-attention keys/values computed once from the encoder output;
- the suppress masks built once, and the timestamp rules of ``WhisperTimeStampLogitsProcessor`` kept as
  per-row state (last token, previous token, last timestamp) and applied as whole-batch tensor operations.

It does greedy decoding only (temperature 0, one beam), with or without timestamps, and mirrors the order of
transformers' processors (begin-suppress, suppress, timestamps). Finished rows keep being fed, as in
``generate()``: dynamic int8 quantizes each Linear's input over the whole batch, so dropping rows would change
the other rows' numbers. The engine checks eligibility (:func:`supported`) and otherwise uses ``generate()``;
``tests/test_fast_paths.py`` compares the two on real speech.
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


class GreedyDecoder:
    def __init__(self, model: Any, attention: str):
        import torch

        gen = model.generation_config
        decoder = model.get_decoder()
        self.attention = attention
        self.layers = list(decoder.layers)
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
        self.suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        if gen.suppress_tokens:
            self.suppress[[t for t in gen.suppress_tokens if 0 <= t < vocab]] = True
        self.begin_suppress = torch.zeros(vocab, dtype=torch.bool, device=device)
        if gen.begin_suppress_tokens:
            self.begin_suppress[[t for t in gen.begin_suppress_tokens if 0 <= t < vocab]] = True

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

    # -------------------------------------------------------------------- decode
    def __call__(
        self,
        encoder_hidden: Any,
        prompts: Sequence[Sequence[int]],
        timestamps: bool,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        no_speech_id: int | None = None,
        sot_index: int = 0,
    ) -> tuple[list[list[int]], list[float] | None, list[float]]:
        """Greedy continuations of ``prompts`` (one per row of ``encoder_hidden``, all the same length).

        Returns each row's generated tokens, ending with end-of-text when the row finished (as the rows of
        ``generate()``'s output after the prompt, without trailing padding); given ``no_speech_id``, each
        row's probability of that token at the start-of-transcript position ``sot_index`` (openai-whisper's no-speech
        probability), read from the first step instead of a separate decoder pass; and each row's sum of the
        chosen tokens' log-probabilities under the model's distribution (before the logit rules), end-of-text
        included."""
        import torch

        batch, prompt_len = len(prompts), len(prompts[0])
        device, dtype = encoder_hidden.device, encoder_hidden.dtype
        max_len = self.max_length if max_new_tokens is None else min(self.max_length, prompt_len + max_new_tokens)
        if prompt_len >= max_len:
            return [[] for _ in prompts], None, [0.0] * batch
        cross = []
        for layer in self.layers:
            att = layer.encoder_attn
            cross.append((self._split(att.k_proj(encoder_hidden)), self._split(att.v_proj(encoder_hidden))))
        # Self-attention keys/values: room for 128 tokens, doubled when a window needs more (most need fewer).
        capacity = min(max_len, prompt_len + 128)
        keys = [torch.empty(batch, self.heads, capacity, self.head_dim, device=device, dtype=dtype) for _ in self.layers]
        values = [torch.empty_like(k) for k in keys]

        tb = self.timestamp_begin
        tokens = torch.tensor([list(p) for p in prompts], dtype=torch.long, device=device)
        generated = torch.full((batch, max_len - prompt_len), self.pad, dtype=torch.long, device=device)
        unfinished = torch.ones(batch, dtype=torch.bool, device=device)
        last = torch.full((batch,), -1, dtype=torch.long, device=device)  # last generated token
        before = torch.full((batch,), -1, dtype=torch.long, device=device)  # the one before it
        last_timestamp = torch.full((batch,), -1, dtype=torch.long, device=device)
        vocab_ids = None
        no_speech: list[float] | None = None
        sum_logprobs = torch.zeros(batch, dtype=torch.float32, device=device)
        pos = 0
        steps = 0
        for step in range(max_len - prompt_len):  # generate() stops when prompt + generated reach max_length
            n = tokens.shape[1]
            if pos + n > capacity:
                capacity = min(max_len, 2 * capacity)
                keys = [_grown(k, capacity) for k in keys]
                values = [_grown(v, capacity) for v in values]
            hidden = self.embed_tokens(tokens) + self.positions[pos : pos + n]
            for layer, k_cache, v_cache, (ck, cv) in zip(self.layers, keys, values, cross):
                att = layer.self_attn
                x = layer.self_attn_layer_norm(hidden)
                q = self._split(att.q_proj(x) * att.scaling)
                k_cache[:, :, pos : pos + n] = self._split(att.k_proj(x))
                v_cache[:, :, pos : pos + n] = self._split(att.v_proj(x))
                o = self._attend(q, k_cache[:, :, : pos + n], v_cache[:, :, : pos + n], causal=n > 1)
                hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(batch, n, -1))
                att = layer.encoder_attn
                x = layer.encoder_attn_layer_norm(hidden)
                o = self._attend(self._split(att.q_proj(x) * att.scaling), ck, cv, causal=False)
                hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(batch, n, -1))
                x = layer.final_layer_norm(hidden)
                hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
            pos += n
            scores = self.proj_out(self.final_norm(hidden[:, -1:]))[:, 0].float()
            if step == 0 and no_speech_id is not None:
                first = scores if n == 1 else self.proj_out(self.final_norm(hidden[:, sot_index : sot_index + 1]))[:, 0].float()
                no_speech = torch.softmax(first, dim=-1)[:, no_speech_id].tolist()

            # log-probabilities of the model's own distribution (before the rules below), as a teacher-forced pass
            # over the tokens computes them: the decoding policy judges every decoding path by the same measure
            logprobs = torch.log_softmax(scores, dim=-1)
            # transformers' order: begin-suppress, suppress, then the timestamp rules.
            if step == 0:
                scores.masked_fill_(self.begin_suppress, NEG_INF)
            scores.masked_fill_(self.suppress, NEG_INF)
            if step < min_new_tokens:
                scores[:, self.eos] = NEG_INF
            if timestamps:
                if vocab_ids is None:
                    vocab_ids = torch.arange(scores.shape[-1], device=device)
                self._timestamp_rules(scores, step, last, before, last_timestamp, vocab_ids)
            nxt = torch.argmax(scores, dim=-1)
            chosen = logprobs.gather(1, nxt[:, None])[:, 0]
            sum_logprobs += torch.where(unfinished, chosen, torch.zeros_like(chosen))
            nxt = torch.where(unfinished, nxt, torch.full_like(nxt, self.pad))
            generated[:, step] = nxt
            steps = step + 1
            unfinished &= nxt != self.eos
            if timestamps:
                is_ts = nxt >= tb
                last_timestamp = torch.where(is_ts, nxt, last_timestamp)
            before, last = last, nxt
            if not bool(unfinished.any()):
                break
            tokens = nxt[:, None]
        rows = generated[:, :steps].tolist()
        out = []
        for row in rows:
            if self.eos in row:
                row = row[: row.index(self.eos) + 1]
            out.append(row)
        return out, no_speech, sum_logprobs.tolist()

    def _timestamp_rules(self, scores, step: int, last, before, last_timestamp, vocab_ids) -> None:
        """``WhisperTimeStampLogitsProcessor`` for the whole batch at once (greedy: no sampling)."""
        import torch

        tb = self.timestamp_begin
        scores[:, self.no_timestamps] = NEG_INF
        if step >= 1:
            last_ts = last >= tb
            before_ts = (before >= tb) if step >= 2 else torch.ones_like(last_ts)
            scores[:, tb:].masked_fill_((last_ts & before_ts)[:, None], NEG_INF)  # a pair closed: text next
            scores[:, : self.eos].masked_fill_((last_ts & ~before_ts)[:, None], NEG_INF)  # a pair open: close it
            seen = last_timestamp >= 0
            floor = torch.where(last_ts & ~before_ts, last_timestamp, last_timestamp + 1)
            floor = torch.where(seen, floor, torch.full_like(floor, tb))
            scores.masked_fill_((vocab_ids >= tb) & (vocab_ids < floor[:, None]), NEG_INF)
        else:
            scores[:, :tb] = NEG_INF
            if self.max_initial is not None:
                scores[:, tb + self.max_initial + 1 :] = NEG_INF
        logprobs = torch.log_softmax(scores, dim=-1)
        timestamp_logprob = logprobs[:, tb:].logsumexp(dim=-1)
        text_max = logprobs[:, :tb].max(dim=-1).values
        scores[:, :tb].masked_fill_((timestamp_logprob > text_max)[:, None], NEG_INF)


def _grown(cache: Any, capacity: int) -> Any:
    """``cache`` (batch, heads, length, dim) copied into a buffer with room for ``capacity`` positions."""
    import torch

    out = torch.empty(*cache.shape[:2], capacity, cache.shape[3], device=cache.device, dtype=cache.dtype)
    out[:, :, : cache.shape[2]] = cache
    return out
