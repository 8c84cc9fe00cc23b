"""The whole pipeline in fp16 and bf16 on the CPU: a dtype bug must not wait for a GPU to be found.

`--dtype auto` is fp16 on CUDA, so these paths are the mission's main path; on the CPU they run through
transformers' model (the native fast path is fp32 only), which is the code CUDA runs. Bounds, not exact text:
half precision rounds differently from fp32 and from one CPU to another.
"""

import json

import pytest

from whisperctl import EngineConfig, Transcriber
from whisperctl.wer import wer

from conftest import run_cli

JFK = "whisper/jfk.flac"
HALF = ["fp16", "bf16"]


@pytest.fixture(scope="module", params=HALF)
def half(request):
    return Transcriber(EngineConfig(dtype=request.param)).load()


def test_half_precision_loads_the_bundled_model(half):
    # The load check once summed each weight in its own dtype: tiny.en's positional embedding sums past fp16's
    # maximum and the model was rejected as "damaged".
    import torch

    assert half.runtime_info()["dtype"] in HALF
    weights = {p.dtype for p in half.loaded.model.parameters() if p.is_floating_point()}
    assert weights == {getattr(torch, {"fp16": "float16", "bf16": "bfloat16"}[half.runtime_info()["dtype"]])}


@pytest.mark.parametrize("chunking", ["batched", "sequential", "vad"])
def test_every_chunking_keeps_the_words(half, speech, references, chunking):
    options = half.options.replace(chunking=chunking)
    result = half.transcribe(str(speech / JFK), options)
    assert wer([references[JFK]], [result.text]) <= 0.1, result.text


def test_word_timestamps(half, speech, references):
    result = half.transcribe(str(speech / JFK), half.options.replace(timestamps="word"))
    words = [w for s in result.segments for w in s.words]
    assert wer([references[JFK]], [result.text]) <= 0.1, result.text
    assert len(words) >= 18
    assert all(0 <= w.start <= w.end <= result.duration + 0.05 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))


@pytest.mark.parametrize("dtype", HALF)
def test_bench_runs_in_half_precision(capsys, tmp_path, dtype):
    out = tmp_path / "r.json"
    code, _, err = run_cli(["bench", "--dtypes", dtype, "--batch-sizes", "1", "--warmup", "0", "--repeats", "1",
                            "--json", out], capsys)
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    assert [r["status"] for r in rows] == ["ok"] and rows[0]["dtype"] == dtype, rows
