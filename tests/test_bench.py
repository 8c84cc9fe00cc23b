"""bench: the matrix, skip reasons, simulated OOM, the JSON schema and the report formats, with a tiny model."""

import json

import numpy as np
import pytest

from conftest import run_cli
from whisperctl.bench import report, runner
from whisperctl.config import Attention, DType, EngineConfig, Quantization
from whisperctl.eligibility import probe
from whisperctl.errors import UsageError


def _inputs():
    rng = np.random.default_rng(0)
    return [runner.BenchInput("noise-a", rng.normal(0, 0.05, 16000 * 40).astype(np.float32), "hello world"),
            runner.BenchInput("noise-b", rng.normal(0, 0.05, 16000 * 5).astype(np.float32), "good bye")]


def _spec(model, **kw):
    base = EngineConfig(model=str(model), max_new_tokens=4)
    defaults = dict(models=(str(model),), attentions=(Attention.EAGER, Attention.SDPA, Attention.FLASH_ATTENTION_2),
                    dtypes=(DType.FP32,), quantizations=(Quantization.NONE,), batch_sizes=(1, 2), warmup=1, repeats=2)
    defaults.update(kw)
    return runner.BenchSpec(base=base, **defaults)


@pytest.mark.slow  # make test stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_matrix_rows_skip_reasons_and_schema(tiny_random_model):
    result = runner.run(_spec(tiny_random_model), _inputs(), probe())
    rows = result["rows"]
    assert [(r["attention"], r["batch_size"]) for r in rows] == [
        ("eager", 1), ("eager", 2), ("sdpa", 1), ("sdpa", 2), ("flash_attention_2", 1), ("flash_attention_2", 2)]
    ok = [r for r in rows if r["status"] == "ok"]
    skipped = [r for r in rows if r["status"].startswith("skipped: ")]
    if not probe().cuda_available:
        assert len(ok) == 4 and len(skipped) == 2
        assert skipped[0]["status"] == "skipped: flash_attention_2 needs an NVIDIA CUDA GPU; this run uses cpu"
    for r in ok:
        assert len(r["samples"]) == 2 and r["rtfx_median"] > 0 and r["latency_p90_s"] >= r["latency_median_s"] > 0
        assert r["samples"][0]["audio_s"] == pytest.approx(45.0)
        batches = r["samples"][0]["batches"]
        # 2 + 1 regular windows, plus gap windows where the 4-token cap left audio untranscribed
        assert all(b["size"] <= r["batch_size"] for b in batches) and sum(b["size"] for b in batches) >= 3
        assert 0 < r["encoder_share"] < 1 and r["peak_rss_bytes"] > 0
        assert r["decoder"] == ("lean" if r["device"] == "cpu" else "generate")
        assert r["same_text"] == ("baseline" if r["attention"] == "eager" else "same") and "wer" in r
        assert r["config"]["batch_size"] == r["batch_size"]
    assert ok[0]["speedup"] == pytest.approx(1.0)
    data = json.loads(json.dumps(result, default=str))
    assert data["schema"] == "whisperctl.bench/1"
    assert {"torch", "transformers", "cpu_model", "torch_threads", "gpus"} <= set(data["environment"])
    assert data["spec"]["attentions"] == ["eager", "sdpa", "flash_attention_2"]


def _oom_over_one(monkeypatch, sizes=None):
    """Features of more than one window raise CUDA's out-of-memory error (through LoadedModel's public method)."""
    from whisperctl.loaded import LoadedModel

    real = LoadedModel.features

    def features(self, chunks):
        if sizes is not None:
            sizes.append(len(chunks))
        if len(chunks) > 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, chunks)

    monkeypatch.setattr(LoadedModel, "features", features)


@pytest.mark.slow  # make test stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_simulated_oom_is_a_row_and_the_run_continues(tiny_random_model, monkeypatch):
    _oom_over_one(monkeypatch)
    result = runner.run(_spec(tiny_random_model, attentions=(Attention.SDPA,), batch_sizes=(1, 2, 4)), _inputs(), probe())
    assert [r["status"] for r in result["rows"]] == ["ok", "OOM at batch 2", "OOM at batch 4"]


def test_engine_halves_the_batch_on_oom_outside_bench(tiny_random_model, monkeypatch, caplog):
    from whisperctl.engine import Transcriber

    sizes: list[int] = []
    _oom_over_one(monkeypatch, sizes)
    t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=2, batch_size=4, vad="none", chunking="batched"))
    result = t.transcribe(np.zeros(16000 * 200, np.float32))  # 8 windows (no VAD: the zeros stand for speech)
    assert result.duration == pytest.approx(200.0)
    assert sizes[:3] == [4, 2, 1] and set(sizes[3:]) == {1}


@pytest.mark.parametrize("where", ["per call", "config"])
def test_oom_halving_off_raises_at_the_first_out_of_memory(tiny_random_model, monkeypatch, where):
    """RunControl(halve_on_oom=False), given to the call or as the config's default, reaches the window decoder:
    the first out-of-memory is the call's error, no smaller batch is tried."""
    from whisperctl import RunControl
    from whisperctl.engine import Transcriber
    from whisperctl.errors import OutOfMemoryError

    sizes: list[int] = []
    _oom_over_one(monkeypatch, sizes)
    config = EngineConfig(model=str(tiny_random_model), max_new_tokens=2, batch_size=4, vad="none", chunking="batched",
                          halve_on_oom=where == "per call")  # per call: the config's default says halve, the call not
    control = RunControl(halve_on_oom=False) if where == "per call" else None
    with pytest.raises(OutOfMemoryError, match="at batch size 4"):
        Transcriber(config).transcribe(np.zeros(16000 * 200, np.float32), control=control)
    assert sizes == [4]


def test_random_weights_blank_text_and_fixed_decode_length(monkeypatch):
    spec = runner.BenchSpec(base=EngineConfig(model="tiny", weights="random", decode_tokens=5), models=("tiny",),
                            attentions=(Attention.SDPA,), dtypes=(DType.FP32,), quantizations=(Quantization.NONE,),
                            batch_sizes=(2,), warmup=0, repeats=1)
    result = runner.run(spec, _inputs(), probe())
    row = result["rows"][0]
    assert row["status"] == "ok" and "texts" not in row and "wer" not in row
    assert [b["tokens"] for b in row["samples"][0]["batches"]] == [10, 5]  # exactly 5 tokens per window
    assert "random weights" in report.header(result)


def test_spec_validation_before_anything_runs():
    with pytest.raises(UsageError, match="--compare: unknown value 'bogus'"):
        runner.parse_list("sdpa,bogus", Attention, "--compare")
    assert runner.parse_list("fa2,flash_attn_2,sdpa", Attention, "--compare") == (Attention.FLASH_ATTENTION_2, Attention.SDPA)
    with pytest.raises(UsageError, match=r"batch sizes must be in \[1, 512\]"):
        runner.parse_list("1,0", int, "--batch-sizes")
    with pytest.raises(UsageError, match="--baseline eager is not among --compare"):
        runner.BenchSpec(EngineConfig(), ("tiny.en",), (Attention.SDPA,), (DType.FP32,), (Quantization.NONE,), (1,), baseline=Attention.EAGER)


def test_report_formats_and_compare_to(tmp_path, tiny_random_model):
    result = runner.run(_spec(tiny_random_model, attentions=(Attention.SDPA,), batch_sizes=(2,), repeats=1, warmup=0), _inputs(), probe())
    report.write_json(result, tmp_path / "a.json")
    report.write_csv(result, tmp_path / "a.csv")
    md = report.to_markdown(result, "whisperctl bench")
    assert md.splitlines()[0] == "```" and "| model | attn |" in md
    header_line = (tmp_path / "a.csv").read_text().splitlines()[0]
    assert header_line.startswith("model,attention,decoder,dtype,quantization,batch_size,latency_median_s")
    previous = json.loads((tmp_path / "a.json").read_text())
    previous["rows"][0]["rtfx_median"] = result["rows"][0]["rtfx_median"] / 2
    (tmp_path / "prev.json").write_text(json.dumps(previous))
    report.add_previous(result, report.load_previous(tmp_path / "prev.json"))
    assert result["rows"][0]["vs_previous"] == pytest.approx(2.0)
    (tmp_path / "junk.json").write_text("{}")
    with pytest.raises(UsageError, match="not a whisperctl bench JSON"):
        report.load_previous(tmp_path / "junk.json")


def test_cli_bench_on_cpu_skips_fa2_with_reason(tmp_path, capsys):
    code, out, err = run_cli(["bench", "--compare", "eager,sdpa,fa2", "--warmup", "0", "--repeats", "1", "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "b.json").read_text())
    statuses = [r["status"] for r in data["rows"]]
    assert statuses[:2] == ["ok", "ok"]
    if not data["environment"]["cuda_available"]:
        assert statuses[2].startswith("skipped: flash_attention_2 needs an NVIDIA CUDA GPU") and "skipped:" in out
    assert data["rows"][0]["samples"][0]["batches"]


@pytest.mark.slow  # make test stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_cli_bench_manifest_adds_wer(tmp_path, capsys, speech):
    manifest = tmp_path / "m.tsv"
    rows = [line for line in (speech / "MANIFEST.tsv").read_text().splitlines() if line.startswith(("file", "pocketsphinx/cards"))]
    manifest.write_text("\n".join(r.replace("pocketsphinx/", str(speech / "pocketsphinx") + "/") for r in rows) + "\n")
    code, out, err = run_cli(["bench", "--manifest", manifest, "--batch-sizes", "1,4", "--quantize", "none,int8",
                              "--warmup", "0", "--repeats", "1", "--json", tmp_path / "b.json"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "b.json").read_text())
    assert [(r["quantization"], r["batch_size"]) for r in data["rows"]] == [("none", 1), ("none", 4), ("int8", 1), ("int8", 4)]
    assert all(r["status"] == "ok" and 0 <= r["wer"] < 0.5 for r in data["rows"])
    assert "WER %" in out


@pytest.mark.parametrize("flags, fragment", [
    (["--compare", "bogus"], "--compare: unknown value 'bogus'"),
    (["--models", "nope-model"], "--model nope-model: unknown model"),
    (["--weights", "random", "--models", "openai/custom"], "no architecture on record"),
    (["--batch-sizes", "0"], "batch sizes must be in [1, 512]"),
    (["--compare-to", "/nonexistent.json"], "no such file"),
])
def test_cli_bench_usage_errors(capsys, flags, fragment):
    code, _, err = run_cli(["bench", *flags], capsys)
    assert code == 2 and fragment in err


def test_plot_is_a_png(tmp_path, tiny_random_model):
    pytest.importorskip("matplotlib")
    result = runner.run(_spec(tiny_random_model, attentions=(Attention.EAGER, Attention.SDPA), batch_sizes=(2,), repeats=1, warmup=0), _inputs(), probe())
    report.write_plot(result, tmp_path / "p.png")
    data = (tmp_path / "p.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_wer_keeps_spoken_words_in_reference_brackets():
    from whisperctl.wer import wer

    reference = "But the first Bible actually dated (which also was printed at Maintz) imitates a freer hand"
    spoken = "but the first bible actually dated, which also was printed at Maintz, imitates a freer hand"
    assert wer([reference], [spoken]) == 0.0
    # the words inside the brackets count: leaving them out is 6 deletions out of 16 reference words
    assert wer([reference], ["but the first bible actually dated imitates a freer hand"]) == pytest.approx(6 / 16)
    # a hypothesis's bracketed annotation is still dropped, as the normaliser intends
    assert wer(["hello there"], ["hello there (music)"]) == 0.0
