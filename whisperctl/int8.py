"""Dynamic int8 Linear layers for the CPU: what ``torch.ao.quantization.quantize_dynamic`` builds, built faster.

``quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`` deep-copies the model and, for each Linear, packs a
throwaway all-zero weight before packing the real one; for tiny.en that took 0.96 s of a 2 s load. Here each
Linear's weight goes through the same observer (per-tensor symmetric MinMax, as ``default_dynamic_qconfig``),
is packed once, and the forward is the same ``quantized::linear_dynamic`` call with ``reduce_range=True``, so
the outputs are bit-identical (tests/test_fast_paths.py), in about 0.3 s for tiny.en.
"""

from __future__ import annotations

import torch


class DynamicInt8Linear(torch.nn.Module):
    """int8 weights packed for fbgemm; activations quantized per call (per tensor), output in fp32."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        from torch.ao.quantization.qconfig import default_dynamic_qconfig

        weight = linear.weight.detach().float()
        observer = default_dynamic_qconfig.weight()
        observer(weight)
        scale, zero_point = observer.calculate_qparams()
        qweight = torch.quantize_per_tensor(weight, float(scale), int(zero_point), torch.qint8)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack(qweight, bias)
        self.in_features = linear.in_features
        self.out_features = linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed, reduce_range=True)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, qint8 dynamic"


def quantize_linears(model: torch.nn.Module) -> int:
    """Replace every ``nn.Linear`` in ``model`` (in place) by :class:`DynamicInt8Linear`; returns how many."""
    import warnings

    targets = [(name, module) for name, module in model.named_modules() if type(module) is torch.nn.Linear]
    with warnings.catch_warnings():  # torch marks its quantized tensor API deprecated; it still runs
        warnings.simplefilter("ignore")
        for name, module in targets:
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, DynamicInt8Linear(module))
    return len(targets)
