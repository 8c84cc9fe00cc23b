"""Dynamic int8 Linear layers for the CPU, with the scales CTranslate2 uses: one per weight row, one per input row.

``torch.ao.quantization.quantize_dynamic`` quantizes a Linear's weight with one scale for the whole matrix and
its input with one scale for the whole batch. Both are fragile: a single large weight coarsens every row, and
one loud token (or one loud window in a batch) coarsens every other row of the batch. On real speech that cost
tiny.en 0.5-1.3 WER points over fp32, and which words it lost changed with the CPU's instruction set, because
fp32 kernels that differ in the last bit (AVX2 vs AVX-512) push different values across the coarse steps.

Here:

- each weight row (output channel) has its own symmetric scale (``quantize_per_channel``);
- each input row (a token, or one frame of the encoder) is divided by its own absolute maximum before fbgemm's
  dynamic quantization and the output row multiplied back (the Linear is linear, so this is exact up to the
  rounding), so every row is quantized over its own range; an anchor row pins fbgemm's range to [-1, 1], so a
  row's result is the same whatever else is in the batch (bit for bit). The bias is added after, in fp32.

The integer arithmetic is fbgemm's ``quantized::linear_dynamic`` with full 8-bit activations
(``reduce_range=False``), as CTranslate2 quantizes them. The earlier 7-bit activations (``reduce_range=True``,
chosen so that AVX2's ``vpmaddubsw`` could never saturate its 16-bit pair sums) halved each row's resolution,
and that alone cost the sequential loop on the LJ 231 s file 5.64 % WER against 3.00 % with 8 bits (fp32:
3.17 %, faster-whisper int8: 3.35 %; tiny.en, greedy, on a 2-core AVX2 AMD EPYC without VNNI, so the 8-bit
figure already includes whatever AVX2 saturation costs). On AVX-512 VNNI the pair sums cannot saturate; on AVX2
they rarely do, so the integers may differ in a few outputs between the two instruction sets: the tests bound
the words (WER), never the exact text, across kernels.
"""

from __future__ import annotations

from typing import Any

import torch


#: Bump when the stored integers change (the quantization's rule), so stale stores are not reused.
STORE_VERSION = 1
_LINEAR_DYNAMIC = torch.ops.quantized.linear_dynamic.default  # (input, packed, reduce_range)
PIECE_ROWS = 16384  # a wider Linear (the vocabulary projection) is packed in pieces, on parallel threads


class DynamicInt8Linear(torch.nn.Module):
    """int8 weights (per output channel) packed for fbgemm; inputs quantized per call, per row; output fp32."""

    def __init__(self, linear: torch.nn.Linear, pieces: list | None = None):
        """``pieces``: the weight's rows already packed by :func:`pack_rows`, in order (else packed here)."""
        super().__init__()
        self._packed = pieces if pieces is not None else [pack_rows(linear, 0, linear.out_features)]
        self.bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        # one extra input row holding both 1 and -1 (see forward)
        self._anchor = torch.zeros(1, self.in_features)
        self._anchor[0, 0], self._anchor[0, -1] = 1.0, -1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Few tensor operations on purpose: a decoder step calls this six times per layer at 1-8 rows, where each
        # operation's dispatch costs more than its arithmetic (69 -> 46 us per call at 2 rows, 384 x 384; the same
        # numbers). Large inputs (the encoder's frames) are divided straight into their buffer instead.
        rows = x.reshape(-1, self.in_features)
        n = rows.shape[0]
        scale = rows.abs().amax(dim=-1, keepdim=True).clamp_(min=1e-30)
        # Each row divided by its absolute maximum lies in [-1, 1]; the anchor row holding both 1 and -1 makes
        # fbgemm's per-tensor range exactly [-1, 1] whatever the other rows hold, so no row's numbers depend on
        # the rest of the batch (nor on which rows of it have finished).
        if n <= 64:
            normed = torch.cat((rows / scale, self._anchor))
        else:
            normed = torch.empty(n + 1, self.in_features, dtype=torch.float32, device=x.device)
            torch.div(rows, scale, out=normed[:n])
            normed[n:] = self._anchor
        if len(self._packed) == 1:
            out = _LINEAR_DYNAMIC(normed, self._packed[0], False)[:n]
        else:  # output columns are computed independently, so pieces give the same numbers as one packed matrix
            out = torch.cat([_LINEAR_DYNAMIC(normed, packed, False) for packed in self._packed], dim=1)[:n]
        out.mul_(scale)
        if self.bias is not None:
            out.add_(self.bias)
        return out.view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qint8 per-row dynamic"

    @classmethod
    def stacked(cls, linears: list["DynamicInt8Linear"]) -> "DynamicInt8Linear":
        """One Linear whose output is ``linears``' outputs side by side (they share their input): one call and
        one GEMM instead of several, the same integers and scales, so the same numbers."""
        weights, scales, biases = [], [], []
        for linear in linears:
            for packed in linear._packed:
                qweight, _ = torch.ops.quantized.linear_unpack(packed)
                weights.append(qweight.int_repr())
                scales.append(qweight.q_per_channel_scales())
            biases.append(linear.bias if linear.bias is not None else torch.zeros(linear.out_features))
        weight, scale = torch.cat(weights), torch.cat(scales)
        shell = torch.nn.Linear(linears[0].in_features, weight.shape[0], bias=False, device="meta")
        out = cls(shell, [_packed_from(weight, scale)])
        out.bias = torch.cat(biases)
        return out


def pack_rows(linear: torch.nn.Linear, start: int, stop: int):
    """Rows ``start:stop`` of ``linear``'s weight, quantized per row (symmetric int8) and packed for fbgemm."""
    return torch.ops.quantized.linear_prepack(_quantized(linear.weight.detach()[start:stop]), None)


def _quantized(rows: torch.Tensor) -> torch.Tensor:
    """``rows`` (out, in) as a per-row quantized qint8 tensor (symmetric: scale = the row's absolute max / 127)."""
    weight = rows.float()
    scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
    # (Rounding weight / scale with plain ops is 3x faster but not the same integers: converted CTranslate2
    # weights lie on a grid, and quantize_per_channel's rounding decides their ties differently.)
    return torch.quantize_per_channel(weight, scales, torch.zeros(weight.shape[0], dtype=torch.long), 0, torch.qint8)


def _packed_from(ints: torch.Tensor, scales: torch.Tensor):
    """int8 rows and their scales (stored, or unpacked from other Linears), packed for fbgemm."""
    qweight = torch._make_per_channel_quantized_tensor(ints, scales, torch.zeros(len(scales), dtype=torch.long), 0)
    return torch.ops.quantized.linear_prepack(qweight, None)


def _targets(model: torch.nn.Module) -> list[tuple[str, torch.nn.Linear]]:
    return [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]


def _on_threads(work, items: list) -> list:
    """``work`` over ``items`` on as many threads as torch computes with (fbgemm's quantizing and packing run on one
    core each and release the GIL)."""
    import warnings

    from concurrent.futures import ThreadPoolExecutor

    with warnings.catch_warnings(), ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
        warnings.simplefilter("ignore")  # torch marks its quantized tensor API deprecated; it still runs
        return list(pool.map(work, items))


def quantize_linears(model: torch.nn.Module, store: Any = None) -> int:
    """Replace every ``nn.Linear`` in ``model`` (in place) by :class:`DynamicInt8Linear`; returns how many.

    ``store``: a file :func:`write_store` wrote for this model (its integers and scales, quantized once): they
    are packed as they are instead of quantizing the weights again (the same integers, so the same numbers). A
    store that does not fit the model (another model's, damaged) is ignored, with a warning."""
    targets = _targets(model)
    stored = _read_store(store, targets) if store is not None else None
    jobs = [(i, start, min(start + PIECE_ROWS, linear.out_features))
            for i, (_, linear) in enumerate(targets) for start in range(0, linear.out_features, PIECE_ROWS)]
    jobs.sort(key=lambda job: job[2] - job[1], reverse=True)  # largest first: the threads end together

    def pack(job: tuple[int, int, int]):
        i, start, stop = job
        if stored is None:
            return pack_rows(targets[i][1], start, stop)
        ints, scales = stored[targets[i][0]]
        return _packed_from(ints[start:stop], scales[start:stop])

    # tiny.en on 2 cores: 0.66 s one by one, 0.47 s on 2 threads, 0.3 s with the vocabulary projection (51864
    # rows, 0.43 s on its own) in 4 pieces; 0.12 s packing stored integers.
    packed = _on_threads(pack, jobs)
    pieces: dict[int, list] = {}
    for (i, start, _), piece in sorted(zip(jobs, packed), key=lambda item: item[0][:2]):
        pieces.setdefault(i, []).append(piece)
    for i, (name, linear) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, DynamicInt8Linear(linear, pieces[i]))
    return len(targets)


def write_store(model: torch.nn.Module, path: Any) -> int:
    """Quantize every ``nn.Linear`` of ``model`` (not replaced) and write the integers and scales to ``path`` (a
    safetensors file) for :func:`quantize_linears`; returns how many."""
    from safetensors.torch import save_file

    targets = _targets(model)
    quantized = _on_threads(lambda target: _quantized(target[1].weight.detach()), targets)
    tensors = {}
    for (name, _), q in zip(targets, quantized):
        tensors[f"{name}.int8"] = q.int_repr().contiguous()
        tensors[f"{name}.scales"] = q.q_per_channel_scales().contiguous()
    save_file(tensors, str(path), metadata={"format": "whisperctl-int8", "version": str(STORE_VERSION)})
    return len(targets)


def _read_store(path: Any, targets: list[tuple[str, torch.nn.Linear]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]] | None:
    """The stored integers and scales of every target, or None (with a warning) when the file does not fit."""
    import logging

    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
        out = {}
        for name, linear in targets:
            ints, scales = tensors[f"{name}.int8"], tensors[f"{name}.scales"]
            if (ints.dtype != torch.int8 or tuple(ints.shape) != (linear.out_features, linear.in_features)
                    or scales.dtype != torch.float64 or tuple(scales.shape) != (linear.out_features,)):
                raise ValueError(f"{name} has the wrong shape or type")
            out[name] = ints, scales
        return out
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a damaged file
        logging.getLogger("whisperctl").warning(
            "int8 weights %s do not fit this model (%s); quantizing again (`whisperctl doctor --verify-cache` finds a "
            "damaged cache entry; delete it to have it written again)", path, exc)
        return None
