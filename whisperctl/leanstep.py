"""The lean loop's decoder step: the model's own decoder layers run over whisperctl's key/value buffers.

:class:`DecoderStep` calls the layers' Linear, LayerNorm and Embedding modules (so int8 Linears, layer norms and
weights are exactly the model's, whisperctl.native's or transformers'), with

- self-attention keys/values written into buffers allocated once per pass (:class:`SelfCache`, doubled when full),
  and with int8 the query, key and value projections stacked into one Linear (one call instead of three per layer
  and step; the same numbers);
- cross-attention keys/values computed once per window from the encoder output and shared by its beams: the
  beams' queries attend to them together, as extra query rows (:meth:`DecoderStep.cross`).

Every tensor it creates follows the encoder output's device and dtype, so the same step runs on the CPU and on
CUDA, in fp32, fp16 or bf16. The search strategies (:mod:`whisperctl.leansearch`) and the loop around them
(:mod:`whisperctl.leanloop`) never touch the layers.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

NEG_INF = float("-inf")


class DecoderStep:
    """One forward step of Whisper's decoder over some new tokens of every row, attention ``eager`` or ``sdpa``."""

    def __init__(self, model: Any, attention: str):
        decoder = model.get_decoder()
        self.attention = attention
        self.layers = list(decoder.layers)
        self.qkv = [_stacked((l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj)) for l in self.layers]
        self.embed_tokens = decoder.embed_tokens
        self.positions = decoder.embed_positions.weight
        self.final_norm = decoder.layer_norm
        self.proj_out = model.proj_out
        att = self.layers[0].self_attn  # transformers versions differ in which of these attributes they keep
        self.heads = int(getattr(att, "num_heads", None) or model.config.decoder_attention_heads)
        self.head_dim = int(getattr(att, "head_dim", None) or model.config.d_model // self.heads)

    # ----------------------------------------------------------------- attention
    def attend(self, q, k, v, causal: bool):
        """Attention of ``q`` to ``k``/``v``. On the CPU always as matmul, softmax, matmul: each row's numbers are
        then the same whatever else is in the batch (PyTorch's CPU SDPA kernel picks its work split by batch size
        and thread count, so a window's text could change with its batch partners: a server's concurrent requests
        would not get what each gets alone). Its cost: docs/benchmarks.md ("Batch-invariant decoding")."""
        import torch

        if self.attention == "sdpa" and q.device.type != "cpu":
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=1.0)
        weights = torch.matmul(q, k.transpose(2, 3))
        if causal:
            n = q.shape[2]
            mask = torch.ones(n, k.shape[2], dtype=torch.bool, device=q.device).tril(k.shape[2] - n)
            weights = weights.masked_fill(~mask, NEG_INF)
        return torch.matmul(torch.softmax(weights, dim=-1, dtype=torch.float32).to(q.dtype), v)

    def split(self, x):
        b, n, _ = x.shape
        return x.view(b, n, self.heads, self.head_dim).transpose(1, 2).contiguous()

    def cross(self, q, ck, cv, beams: int):
        """Cross-attention of ``q`` (windows x beams rows, heads, n, dim) to each window's shared keys/values."""
        if beams == 1:
            return self.attend(q, ck, cv, causal=False)
        rows, heads, n, dim = q.shape
        windows = rows // beams
        # every query attends on its own (no mask): a window's beams become extra query positions of the window
        q = q.view(windows, beams, heads, n, dim).permute(0, 2, 1, 3, 4).reshape(windows, heads, beams * n, dim)
        o = self.attend(q, ck, cv, causal=False)
        return o.view(windows, heads, beams, n, dim).permute(0, 2, 1, 3, 4).reshape(rows, heads, n, dim)

    def cross_cache(self, encoder_hidden) -> list[tuple[Any, Any]]:
        """Each layer's cross-attention keys and values of ``encoder_hidden`` (computed once per pass)."""
        return [(self.split(layer.encoder_attn.k_proj(encoder_hidden)), self.split(layer.encoder_attn.v_proj(encoder_hidden)))
                for layer in self.layers]

    # ------------------------------------------------------------------- forward
    def forward(self, tokens, pos: int, keys, values, cross: Iterable[tuple[Any, Any]], beams: int = 1):
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
            q = self.split(q * att.scaling)
            k_cache[:, :, pos : pos + n] = k.view(rows, n, self.heads, self.head_dim).transpose(1, 2)  # copied in
            v_cache[:, :, pos : pos + n] = v.view(rows, n, self.heads, self.head_dim).transpose(1, 2)
            o = self.attend(q, k_cache[:, :, : pos + n], v_cache[:, :, : pos + n], causal=n > 1)
            hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(rows, n, -1))
            att = layer.encoder_attn
            x = layer.encoder_attn_layer_norm(hidden)
            o = self.cross(self.split(att.q_proj(x) * att.scaling), ck, cv, beams)
            hidden = hidden + att.out_proj(o.transpose(1, 2).reshape(rows, n, -1))
            x = layer.final_layer_norm(hidden)
            hidden = hidden + layer.fc2(layer.activation_fn(layer.fc1(x)))
        return hidden

    def logits(self, hidden):
        """fp32 logits (rows, vocabulary) of the last position of ``hidden`` (rows, n, dim)."""
        return self.proj_out(self.final_norm(hidden[:, -1:]))[:, 0].float()

    def buffers(self, rows: int, capacity: int, like) -> tuple[list[Any], list[Any]]:
        """Empty self-attention key and value buffers, one per layer, on ``like``'s device and in its dtype."""
        import torch

        keys = [torch.empty(rows, self.heads, capacity, self.head_dim, device=like.device, dtype=like.dtype) for _ in self.layers]
        return keys, [torch.empty_like(k) for k in keys]


class SelfCache:
    """The self-attention keys/values of every row: room for 128 positions past the prompt at first (most windows
    need fewer), doubled up to ``max_len`` when full; rows selected (dropped or reordered) between steps."""

    def __init__(self, step: DecoderStep, rows: int, prompt_len: int, max_len: int, like):
        self.capacity = min(max_len, prompt_len + 128)
        self.max_len = max_len
        self.keys, self.values = step.buffers(rows, self.capacity, like)

    def room(self, needed: int) -> None:
        if needed > self.capacity:
            self.capacity = min(self.max_len, 2 * self.capacity)
            self.keys = [_grown(c, self.capacity) for c in self.keys]
            self.values = [_grown(c, self.capacity) for c in self.values]

    def select(self, index, filled: int) -> None:
        """Keep the rows ``index`` (in that order); only their first ``filled`` positions hold anything, and only
        those are copied (a beam search reorders its rows at every step)."""
        self.keys = [_selected(c, index, filled) for c in self.keys]
        self.values = [_selected(c, index, filled) for c in self.values]


def select_rows(cross: Sequence[tuple[Any, Any]], index) -> list[tuple[Any, Any]]:
    """The cross-attention keys/values of the rows ``index`` (greedy rows leaving the batch)."""
    return [(ck.index_select(0, index), cv.index_select(0, index)) for ck, cv in cross]


def _stacked(projections) -> Any:
    """The self-attention's query, key and value projections as one int8 Linear (one call per step instead of
    three; the same numbers), where they are int8; else None."""
    from .int8 import DynamicInt8Linear

    if not all(type(p) is DynamicInt8Linear for p in projections):
        return None
    return DynamicInt8Linear.stacked(list(projections))


def _selected(cache: Any, index, filled: int) -> Any:
    """Rows ``index`` of ``cache`` (batch, heads, capacity, dim), positions ``:filled`` copied, the rest left empty."""
    import torch

    out = cache.new_empty((index.shape[0], *cache.shape[1:]))
    torch.index_select(cache[:, :, :filled], 0, index, out=out[:, :, :filled])
    return out


def _grown(cache: Any, capacity: int) -> Any:
    """``cache`` (batch, heads, length, dim) copied into a buffer with room for ``capacity`` positions."""
    import torch

    out = torch.empty(*cache.shape[:2], capacity, cache.shape[3], device=cache.device, dtype=cache.dtype)
    out[:, :, : cache.shape[2]] = cache
    return out
