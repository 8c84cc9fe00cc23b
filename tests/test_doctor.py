"""doctor on simulated machines: verdicts, and the same choice --attn auto makes."""

import json

import pytest

from conftest import run_cli
from test_eligibility import A100, FA2_BROKEN, FA2_OK, H100, P100, T4, env
from whisperctl.config import EngineConfig
from whisperctl.doctor import HostFacts, Status, estimate_batch, healthy, run_checks
from whisperctl.eligibility import make_plan

FACTS = HostFacts(
    packages={"typer": "0.29", "rich": "15", "soundfile": "0.13", "av": "18.1.0", "librosa": "0.11", "soxr": "1.0", "numpy": "2.0",
              "jiwer": "4", "psutil": "7", "accelerate": None, "bitsandbytes": None, "flash-attn": None},
    libsndfile="1.2.2", mp3=True, cpu_model="Test CPU", cores_physical=2, cores_logical=2,
    torch_threads=2, isa=("avx2",), bundled_dir="/x/model", bundled_ok=True, converted=None, hf_cache="/hf",
)


def by_name(checks, section_prefix, name):
    return next(c for c in checks if c.section.startswith(section_prefix) and c.name == name)


@pytest.mark.parametrize(
    "machine, device, fa2_status, fa2_fragment",
    [
        (env(), "cpu", Status.FAIL, "needs an NVIDIA CUDA GPU"),
        (env(P100, FA2_OK), "cuda:0", Status.FAIL, "needs compute capability ≥ 8.0, found 6.0 (Tesla P100-PCIE-16GB)"),
        (env(T4), "cuda:0", Status.FAIL, "found 7.5 (Tesla T4)"),
        (env(A100), "cuda:0", Status.FAIL, "flash-attn is not installed"),
        (env(A100, FA2_OK), "cuda:0", Status.PASS, "flash-attn 2.7.4"),
        (env(H100, FA2_OK), "cuda:0", Status.PASS, "sm 9.0"),
        (env(A100, FA2_BROKEN), "cuda:0", Status.FAIL, "does not import"),
    ],
)
def test_attention_matrix_and_recommendation_match_auto(machine, device, fa2_status, fa2_fragment):
    checks = run_checks(machine, FACTS)
    fa2 = by_name(checks, f"attention on {device}", "flash_attention_2")
    assert fa2.status is fa2_status and fa2_fragment in fa2.why
    rec = by_name(checks, "recommendation", "--attn auto --dtype auto --quantize auto")
    plan = make_plan(EngineConfig(), machine)
    assert f"attention {plan.attention.value}" in rec.why and f"dtype {plan.dtype.value}" in rec.why
    assert healthy(checks), "an unusable optional kernel does not make the machine unhealthy"


def test_flash_attn_import_crash_is_a_fail_line_not_a_crash():
    checks = run_checks(env(A100, FA2_BROKEN), FACTS)
    line = by_name(checks, "versions", "flash-attn")
    assert line.status is Status.FAIL and "undefined symbol" in line.why and "reinstall" in line.fix


def test_old_transformers_fails_and_auto_picks_eager():
    checks = run_checks(env(transformers="4.30.0"), FACTS)
    assert by_name(checks, "versions", "transformers").status is Status.FAIL
    assert by_name(checks, "versions", "whisper sdpa").status is Status.FAIL
    assert "attention eager" in by_name(checks, "recommendation", "--attn auto --dtype auto --quantize auto").why
    assert not healthy(checks)


def test_missing_bundled_model_or_bad_hash_is_unhealthy():
    import dataclasses

    assert not healthy(run_checks(env(), dataclasses.replace(FACTS, bundled_dir=None)))
    assert not healthy(run_checks(env(), dataclasses.replace(FACTS, bundled_ok=False)))


def test_batch_estimate_scales_with_memory_and_model():
    from whisperctl.config import DType

    small, _ = estimate_batch("distil-large-v3", 16 << 30, DType.FP16)
    big, _ = estimate_batch("distil-large-v3", 80 << 30, DType.FP16)
    large, _ = estimate_batch("large-v3", 16 << 30, DType.FP16)
    assert 0 < small < big and large <= small
    assert estimate_batch("large-v3", 1 << 30, DType.FP32)[0] == 0
    assert estimate_batch("someone/custom", 1 << 30, DType.FP16) is None


def test_doctor_on_this_machine_is_truthful(capsys):
    code, out, err = run_cli(["doctor", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["healthy"] is True
    fa2 = next(c for c in data["checks"] if c["section"] == "attention on cpu (fp32)" and c["name"] == "flash_attention_2")
    assert fa2["status"] == "FAIL"
    if not data["environment"]["cuda_available"]:
        assert "needs an NVIDIA CUDA GPU" in fa2["why"]
    code, out, _ = run_cli(["doctor"], capsys)
    assert code == 0 and "The default path works." in out
