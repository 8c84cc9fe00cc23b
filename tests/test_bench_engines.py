"""bench --engines: the engine protocol through the real CLI with fake engines (registered as the real ones are, run in
their own processes), the usage errors that come before anything runs, the openai-whisper checkpoint, and each
real engine on one short clip (skipped when its package is missing)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from whisperctl.bench import compare, engines, runner

TESTS = Path(__file__).resolve().parent


@pytest.fixture
def fake_engines(monkeypatch, tmp_path):
    """Parent and children find tests/bench_fake_engines.py; each fake engine logs what it was asked for."""
    monkeypatch.setenv(engines.PLUGINS_ENV, "bench_fake_engines")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    log = tmp_path / "engines.log"
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    return log


@pytest.fixture
def clips(tmp_path):
    """a.wav (1 s) and b.wav (2 s), each with its reference beside it as <stem>.txt."""
    import soundfile as sf

    folder = tmp_path / "clips"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stem, seconds, text in (("a", 1, "Hello, world."), ("b", 2, "Good bye, friend.")):
        sf.write(folder / f"{stem}.wav", rng.normal(0, 0.05, 16000 * seconds).astype(np.float32), 16000)
        (folder / f"{stem}.txt").write_text(text + "\n", encoding="utf-8")
    return folder


def _no_spawn(monkeypatch):
    monkeypatch.setattr(compare, "_spawn", lambda *a, **k: pytest.fail("an engine ran before the options were checked"))


def test_fake_engines_through_the_cli(fake_engines, clips, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    code, stdout, err = run_cli(["bench", "--engines", "fake,fake-twin", "--audio", clips, "--repeats", "3", "--warmup", "0",
                                 "--threads", "1", "--beam-size", "2", "--language", "en", "--json", out / "r.json",
                                 "--csv", out / "r.csv", "--markdown", out / "r.md"], capsys)
    assert code == 0, err
    asked = [json.loads(line) for line in fake_engines.read_text().splitlines()]
    # one process per engine and repeat, the order reversed on every other repeat
    assert [a["engine"] for a in asked] == ["fake", "fake-twin", "fake-twin", "fake", "fake", "fake-twin"]
    assert len({a["pid"] for a in asked}) == 6 and os.getpid() not in {a["pid"] for a in asked}
    assert {(a["threads"], a["beam_size"], a["language"], a["device"], a["dtype"]) for a in asked} == {(1, 2, "en", "cpu", "fp32")}
    result = json.loads((out / "r.json").read_text())
    assert result["kind"] == "engines" and result["spec"]["engines"] == ["fake", "fake-twin"]
    assert result["spec"]["baseline"] == "fake" and result["spec"]["request"]["beam_size"] == 2
    rows = {r["engine"]: r for r in result["rows"]}
    fake = rows["fake"]
    assert fake["status"] == "ok" and len(fake["samples"]) == 3
    assert [(s["repeat"], s["position"]) for s in fake["samples"]] == [(0, 0), (1, 1), (2, 0)]
    assert fake["samples"][0]["audio_s"] == pytest.approx(3.0) and len(fake["samples"][0]["per_file_s"]) == 2
    assert fake["rtfx_median"] > fake["rtfx_with_load_median"] > 0 and fake["peak_rss_bytes"] > 0
    assert fake["ran_summary"] == "fp32, fake, batch 1, whole file, VAD none, beam 2, no fallback"
    assert fake["texts"] == ["hello world", "good friend"]
    # WER: a.wav right, b.wav lost "bye": 1 of 5 words in total, 1 of 3 at the worst file
    assert fake["wer"] == pytest.approx(1 / 5)
    assert [(Path(f["name"]).name, round(f["wer"], 3), f["dropped"]) for f in fake["files"]] == [
        ("a.wav", 0.0, []), ("b.wav", 0.333, ["bye"])]
    assert fake["worst_file_summary"] == "b.wav 33.3 %, dropped: bye"
    assert fake["speedup"] == pytest.approx(1.0) and rows["fake-twin"]["speedup"] > 0
    assert "fake-twin" in stdout and "b.wav 33.3 %, dropped: bye" in stdout
    md = (out / "r.md").read_text()
    assert "| engine | runs |" in md and "| fake |" in md
    csv_text = (out / "r.csv").read_text()
    assert csv_text.startswith("engine,model,device,threads") and "fake-twin" in csv_text


def test_compare_to_matches_rows_by_engine(fake_engines, clips, tmp_path, capsys):
    first = tmp_path / "first.json"
    args = ["bench", "--engines", "fake,fake-twin", "--audio", clips, "--repeats", "1", "--warmup", "0", "--threads", "1"]
    assert run_cli(args + ["--json", first], capsys)[0] == 0
    code, stdout, err = run_cli(args + ["--compare-to", first, "--json", tmp_path / "second.json"], capsys)
    assert code == 0, err
    rows = json.loads((tmp_path / "second.json").read_text())["rows"]
    assert all(r["vs_previous"] > 0 for r in rows)


def test_an_engine_that_fails_is_a_row_and_the_others_run(fake_engines, clips, capsys, tmp_path):
    code, stdout, err = run_cli(["bench", "--engines", "fake-crash,fake", "--audio", clips, "--repeats", "2", "--warmup", "0",
                                 "--threads", "1", "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    rows = {r["engine"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["fake-crash"]["status"] == "error: RuntimeError: the fake engine cannot load"
    assert rows["fake"]["status"] == "ok" and "speedup" not in rows["fake"]  # no baseline to compare with
    # the failed engine is not started again
    assert [json.loads(line)["engine"] for line in fake_engines.read_text().splitlines()] == ["fake", "fake"]
    code, _, _ = run_cli(["bench", "--engines", "fake-crash", "--audio", clips, "--repeats", "1", "--warmup", "0",
                          "--threads", "1"], capsys)
    assert code == 1  # nothing ran


@pytest.mark.parametrize("args, message", [
    (["--engines", "fastr-whisper"], "whisperctl: error: --engines: unknown engine 'fastr-whisper'. Valid: all, whisperctl, "
                                     "transformers, faster-whisper, faster-whisper:batched, openai-whisper, whisper.cpp, fake, "
                                     "fake-twin, "
                                     "fake-crash, fake-missing. Did you mean 'faster-whisper'?"),
    (["--engines", "whisperctl,fake-missing"], "whisperctl: error: --engines fake-missing: whisperctl-no-such-distribution is "
                                               "not installed; pip install whisperctl-no-such-distribution."),
    (["--engines", ","], "whisperctl: error: --engines: empty."),
    (["--engines", "fake", "--compare", "eager,sdpa"], "whisperctl: error: --compare: --engines compares the engines at one "
                                                       "configuration; give one value, got eager, sdpa."),
    (["--engines", "fake", "--weights", "random"], "whisperctl: error: --weights: not with --engines"),
    (["--engines", "fake", "--attn", "fa2"], "whisperctl: error: --attn flash_attention_2: flash_attention_2 needs an NVIDIA CUDA GPU"),
    (["--engines", "faster-whisper", "--model", "openai/whisper-tiny"], "whisperctl: error: --engines faster-whisper: needs a "
                                                                         "CTranslate2 model"),
])
def test_usage_errors_exit_2_before_anything_runs(fake_engines, args, message, monkeypatch, capsys, no_model_load):
    if "faster-whisper" in args and engines.registry()["faster-whisper"].missing():
        pytest.skip("faster-whisper is not installed")
    _no_spawn(monkeypatch)
    code, _, err = run_cli(["bench", *args, "--threads", "1"], capsys)
    assert code == 2
    assert err.startswith(message), err


def test_missing_package_without_plugins_names_the_install_command(monkeypatch, capsys, no_model_load,
                                                                    without_distributions):
    """The real openai-whisper engine, as on a machine without the package."""
    without_distributions("openai-whisper")
    _no_spawn(monkeypatch)
    code, _, err = run_cli(["bench", "--engines", "whisperctl,openai-whisper", "--threads", "1"], capsys)
    assert code == 2
    assert err == ("whisperctl: error: --engines openai-whisper: openai-whisper is not installed; "
                   "pip install 'whisperctl[openai]'.\n")


def test_all_runs_what_can_run_and_lists_the_rest_as_skipped_rows(fake_engines, clips):
    names, skipped = engines.parse_engines("all")
    assert "fake" in names and "fake-missing" not in names
    assert skipped["fake-missing"] == "whisperctl-no-such-distribution is not installed; pip install whisperctl-no-such-distribution"
    from whisperctl.eligibility import probe

    bench = compare.plan("fake", {"threads": 1}, probe(), warmup=0, repeats=1)
    bench = compare.EngineBench(bench.engines, bench.request, bench.base, (("fake-missing", skipped["fake-missing"]),), 0, 1)
    result = compare.run(bench, runner.load_inputs([str(clips)]), probe())
    assert [(r["engine"], r["status"]) for r in result["rows"]] == [
        ("fake", "ok"), ("fake-missing", "skipped: " + skipped["fake-missing"])]


# ------------------------------------------------------------------------------------- openai-whisper format
@pytest.fixture(scope="module")
def tiny_whisper_shaped(tmp_path_factory, tiny_random_model):
    """tiny_random_model with MLPs 4x its width, as every real Whisper (openai-whisper can only build those)."""
    import shutil

    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    out = tmp_path_factory.mktemp("tiny-whisper-shaped")
    config = WhisperConfig.from_pretrained(tiny_random_model)
    config.encoder_ffn_dim = config.decoder_ffn_dim = 4 * config.d_model
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json", "generation_config.json"):
        shutil.copy(tiny_random_model / name, out / name)
    return out


def test_openai_checkpoint_names_and_dims(tiny_whisper_shaped, tiny_random_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from whisperctl import openai_format
    from whisperctl.errors import ConversionError

    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConversionError, match="encoder_ffn_dim is 128"):
        openai_format.openai_checkpoint(tiny_random_model)
    tiny_random_model = tiny_whisper_shaped
    path = openai_format.openai_checkpoint(tiny_random_model)
    assert openai_format.openai_checkpoint(tiny_random_model) == path  # written once
    import torch

    saved = torch.load(path, weights_only=True)
    assert saved["dims"] == {"n_mels": 80, "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 64, "n_audio_head": 2,
                             "n_audio_layer": 2, "n_text_ctx": 448, "n_text_state": 64, "n_text_head": 2, "n_text_layer": 2}
    state = saved["model_state_dict"]
    assert {"encoder.blocks.1.attn.query.weight", "encoder.ln_post.weight", "decoder.token_embedding.weight",
            "decoder.blocks.0.cross_attn.key.weight", "decoder.blocks.0.mlp.2.bias", "decoder.ln.bias",
            "encoder.positional_embedding", "decoder.positional_embedding"} <= set(state)
    hf = load_file(str(tiny_random_model / "model.safetensors"))
    assert torch.equal(state["decoder.blocks.1.cross_attn_ln.weight"], hf["model.decoder.layers.1.encoder_attn_layer_norm.weight"])
    assert len(state) == len([k for k in hf if not k.startswith("proj_out.")])


def test_openai_whisper_computes_what_transformers_computes(tiny_whisper_shaped, tmp_path, monkeypatch):
    whisper = pytest.importorskip("whisper")
    import torch
    from transformers import WhisperForConditionalGeneration

    from whisperctl import openai_format

    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    ours = whisper.load_model(str(openai_format.openai_checkpoint(tiny_whisper_shaped)), device="cpu")
    theirs = WhisperForConditionalGeneration.from_pretrained(tiny_whisper_shaped).eval()
    mel = torch.randn(1, 80, 3000, generator=torch.Generator().manual_seed(0))
    tokens = torch.tensor([[50257, 50362, 400, 401]])
    with torch.no_grad():
        logits = ours(mel, tokens)
        expected = theirs(input_features=mel, decoder_input_ids=tokens).logits
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------------------------------------- real engines
@pytest.mark.parametrize("name", ["whisperctl", pytest.param("transformers", marks=pytest.mark.slow), "faster-whisper",
                                  "faster-whisper:batched", "openai-whisper"])
def test_each_real_engine_on_one_short_clip(name, speech, references):
    why = engines.registry()[name].missing()
    if why:
        pytest.skip(why)
    from whisperctl.eligibility import probe

    bench = compare.plan(name, {"threads": 1}, probe(), warmup=0, repeats=1)
    inputs = runner.load_inputs(manifest=None, audio=[str(speech / "whisper" / "jfk.flac")])
    inputs[0].reference = references["whisper/jfk.flac"]
    row = compare.run(bench, inputs, probe())["rows"][0]
    assert row["status"] == "ok", row["status"]
    assert row["wer"] < 0.1, row["texts"]
    assert row["ran"]["beam"] == 1 and row["ran"]["compute"] and row["ran"]["chunking"]
    assert row["imports_s"] > 0 and row["load_s"] > 0 and row["rtfx_median"] > row["rtfx_with_load_median"] > 0
    assert row["peak_rss_bytes"] > 50 * 2**20


def test_whisperctl_engine_runs_the_inputs_together(speech, references):
    """whisperctl's engine runs the inputs in one call, as `whisperctl transcribe a b c` runs a folder (their windows
    share batches); each text is its own input's, in input order, and the row says so."""
    from whisperctl.eligibility import probe
    from whisperctl.wer import wer

    names = ["whisper/jfk.flac", "pocketsphinx/cards_002.wav", "TTS/LJ001-0002.wav"]
    names = [n for n in names if n in references]
    bench = compare.plan("whisperctl", {"threads": 1}, probe(), warmup=0, repeats=1)
    inputs = runner.load_inputs(manifest=None, audio=[str(speech / n) for n in names])
    for item, name in zip(inputs, names):
        item.reference = references[name]
    row = compare.run(bench, inputs, probe())["rows"][0]
    assert row["status"] == "ok", row["status"]
    assert row["ran"]["inputs"] == "together" and "inputs together" in row["ran_summary"]
    assert len(row["texts"]) == len(names) and len(row["samples"][0]["per_file_s"]) == len(names)
    for text, name in zip(row["texts"], names):  # each text is its own input's
        assert wer([references[name]], [text]) < min(wer([references[other]], [text]) for other in names if other != name)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["whisperctl", "transformers", "faster-whisper", "openai-whisper"])
def test_each_real_engine_on_cuda(name, speech, references):
    why = engines.registry()[name].missing()
    if why:
        pytest.skip(why)
    from whisperctl.eligibility import probe

    bench = compare.plan(name, {"device": "cuda"}, probe(), warmup=1, repeats=1)
    inputs = runner.load_inputs(audio=[str(speech / "whisper" / "jfk.flac")])
    inputs[0].reference = references["whisper/jfk.flac"]
    row = compare.run(bench, inputs, probe())["rows"][0]
    assert row["status"] == "ok", row["status"]
    assert row["wer"] < 0.1 and row["peak_vram_bytes"] > 0
    assert row["ran"]["compute"] in ("fp16", "float16")


def test_a_toml_preset_names_the_engines(fake_engines, clips, tmp_path, monkeypatch, capsys):
    preset = tmp_path / "engines.toml"
    preset.write_text('[engine]\nthreads = 1\n[bench]\nengines = ["fake", "fake-twin"]\nrepeats = 1\nwarmup = 0\n')
    code, stdout, err = run_cli(["bench", "--config", preset, "--audio", clips, "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    assert [r["engine"] for r in json.loads((tmp_path / "r.json").read_text())["rows"]] == ["fake", "fake-twin"]


def test_manifest_references_score_every_engine(fake_engines, clips, tmp_path, capsys):
    manifest = clips / "MANIFEST.tsv"
    manifest.write_text("file\treference_text\na.wav\thello world\nb.wav\tgood friend\n", encoding="utf-8")
    code, stdout, err = run_cli(["bench", "--engines", "fake", "--manifest", manifest, "--repeats", "1", "--warmup", "0",
                                 "--threads", "1", "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["wer"] == 0.0 and [f["name"] for f in row["files"]] == ["a.wav", "b.wav"]
    assert row["worst_file_summary"] == "a.wav 0.0 %"
