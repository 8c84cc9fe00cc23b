"""Eligibility on simulated machines: the same verdicts feed --attn auto, bench and doctor."""

import pytest

from whisperctl.config import Attention, DType, EngineConfig, Quantization
from whisperctl.eligibility import GPU, Environment, Package, attention_verdict, auto_attention, make_plan, probe
from whisperctl.errors import EligibilityError

FA2_OK = Package("flash-attn", "2.7.4", importable=True)
FA2_BROKEN = Package("flash-attn", "2.7.4", importable=False, error="undefined symbol: _ZN3c10")


def env(gpu: GPU | None = None, flash=Package("flash-attn"), torch="2.5.1", transformers="4.46.0", bnb=Package("bitsandbytes")):
    return Environment(
        python="3.11.7", torch=torch, transformers=transformers, cuda_available=gpu is not None,
        torch_cuda="12.4" if gpu else None, gpus=(gpu,) if gpu else (), flash_attn=flash, bitsandbytes=bnb,
        cpu_sdpa_backends=frozenset({"flash", "math"}), cudnn_backend=True,
    )


P100 = GPU(0, "Tesla P100-PCIE-16GB", (6, 0), 16 << 30, 15 << 30)
V100 = GPU(0, "Tesla V100-SXM2-32GB", (7, 0), 32 << 30, 31 << 30)
T4 = GPU(0, "Tesla T4", (7, 5), 16 << 30, 15 << 30)
A100 = GPU(0, "NVIDIA A100-SXM4-80GB", (8, 0), 80 << 30, 79 << 30)
H100 = GPU(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30, 79 << 30)


@pytest.mark.parametrize(
    "machine, expected",
    [
        (env(), Attention.SDPA),
        (env(P100, FA2_OK), Attention.SDPA),
        (env(V100, FA2_OK), Attention.SDPA),
        (env(T4, FA2_OK), Attention.SDPA),
        (env(A100), Attention.SDPA),
        (env(A100, FA2_BROKEN), Attention.SDPA),
        (env(A100, FA2_OK), Attention.FLASH_ATTENTION_2),
        (env(H100, FA2_OK), Attention.FLASH_ATTENTION_2),
        (env(torch="2.0.1"), Attention.EAGER),
        (env(transformers="4.35.2"), Attention.EAGER),
    ],
)
def test_auto_choice(machine, expected):
    plan = make_plan(EngineConfig(), machine)
    assert plan.attention is expected
    assert plan.attention_reason.startswith(f"auto → {expected.value}")


def test_auto_falls_back_from_fa2_with_fp32_on_h100():
    plan = make_plan(EngineConfig(dtype="fp32"), env(H100, FA2_OK))
    assert plan.attention is Attention.SDPA
    assert "needs fp16/bf16" in plan.attention_reason


@pytest.mark.parametrize(
    "machine, dtype, fragment",
    [
        (env(), "auto", "needs an NVIDIA CUDA GPU; this run uses cpu"),
        (env(P100, FA2_OK), "fp16", "needs compute capability ≥ 8.0, found 6.0 (Tesla P100-PCIE-16GB)"),
        (env(T4, FA2_OK), "fp16", "found 7.5 (Tesla T4)"),
        (env(A100, FA2_OK), "fp32", "needs fp16/bf16, got fp32"),
        (env(A100), "fp16", "flash-attn is not installed"),
        (env(A100, FA2_BROKEN), "fp16", "does not import: undefined symbol"),
    ],
)
def test_explicit_fa2_that_cannot_run_is_an_error_not_a_switch(machine, dtype, fragment):
    with pytest.raises(EligibilityError) as err:
        make_plan(EngineConfig(attention="fa2", dtype=dtype), machine)
    assert fragment in str(err.value)
    assert "Fix:" in str(err.value) and err.value.exit_code == 2


def test_explicit_fa2_on_h100():
    plan = make_plan(EngineConfig(attention="fa2", dtype="bf16"), env(H100, FA2_OK))
    assert plan.attention is Attention.FLASH_ATTENTION_2 and plan.dtype is DType.BF16 and plan.device == "cuda:0"


def test_auto_dtype_and_device():
    assert make_plan(EngineConfig(), env(T4)).dtype is DType.FP16
    assert make_plan(EngineConfig(), env()).dtype is DType.FP32
    with pytest.raises(EligibilityError, match="bf16 needs compute capability ≥ 8.0, found 7.5"):
        make_plan(EngineConfig(dtype="bf16"), env(T4))
    with pytest.raises(EligibilityError, match="CUDA is not available"):
        make_plan(EngineConfig(device="cuda"), env())
    with pytest.raises(EligibilityError, match="no such GPU"):
        make_plan(EngineConfig(device="cuda:3"), env(A100))


def test_sdpa_backends_per_device():
    cpu = env()
    assert attention_verdict(Attention.SDPA_MATH, "cpu", DType.FP32, cpu).usable
    assert not attention_verdict(Attention.SDPA_EFFICIENT, "cpu", DType.FP32, cpu).usable
    assert not attention_verdict(Attention.SDPA_FLASH, "cuda:0", DType.FP16, env(T4)).usable
    assert attention_verdict(Attention.SDPA_EFFICIENT, "cuda:0", DType.FP16, env(T4)).usable
    assert attention_verdict(Attention.SDPA_FLASH, "cuda:0", DType.FP16, env(H100)).usable
    assert not attention_verdict(Attention.SDPA_FLASH, "cuda:0", DType.FP32, env(H100)).usable
    assert not attention_verdict(Attention.SDPA_CUDNN, "cuda:0", DType.FP16, env(V100)).usable


def test_quantization_rules():
    with pytest.raises(EligibilityError, match="int4 needs CUDA"):
        make_plan(EngineConfig(quantization="int4"), env())
    with pytest.raises(EligibilityError, match="needs bitsandbytes"):
        make_plan(EngineConfig(quantization="int8"), env(A100))
    with pytest.raises(EligibilityError, match="computes in fp32"):
        make_plan(EngineConfig(quantization="int8", dtype="bf16"), env())
    assert make_plan(EngineConfig(quantization="int8"), env()).quantization is Quantization.INT8
    assert make_plan(EngineConfig(quantization="int4"), env(A100, bnb=Package("bitsandbytes", "0.45.0", True))).quantization is Quantization.INT4


def test_probe_reports_this_cpu_machine_truthfully():
    real = probe()
    choice, reason = auto_attention("cpu", DType.FP32, real)
    assert choice is Attention.SDPA
    assert "math" in real.cpu_sdpa_backends
    if not real.cuda_available:
        assert "needs an NVIDIA CUDA GPU" in reason
