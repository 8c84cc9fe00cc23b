"""The CTranslate2 reader and converter: real bundled file, a synthetic round trip (fp32 and int8), corrupt input."""

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from whisperctl import cache, ct2, models
from whisperctl.errors import ConversionError


def _s(text: str) -> bytes:
    raw = text.encode() + b"\x00"
    return struct.pack("<H", len(raw)) + raw


def write_ct2(path: Path, variables: dict[str, np.ndarray], aliases=()) -> None:
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.int32): 3, np.dtype(np.float16): 4}
    out = [struct.pack("<I", 6), _s("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for name, arr in variables.items():
        arr = np.ascontiguousarray(arr)
        out += [_s(name), struct.pack("<B", arr.ndim), b"".join(struct.pack("<I", d) for d in arr.shape),
                struct.pack("<B", codes[arr.dtype]), struct.pack("<I", arr.nbytes), arr.tobytes()]
    out.append(struct.pack("<I", len(aliases)))
    for a, t in aliases:
        out += [_s(a), _s(t)]
    path.write_bytes(b"".join(out))


def hf_to_ct2(state: dict[str, np.ndarray], enc_layers: int, dec_layers: int, heads: int, quantize: bool):
    """Inverse of the converter's mapping, to build a synthetic faster-whisper directory."""
    v: dict[str, np.ndarray] = {}

    def put(name, arr, weight=False):
        if quantize and weight and arr.ndim == 2:
            scale = 127.0 / np.maximum(np.abs(arr).max(axis=1), 1e-8)
            v[name] = np.round(arr * scale[:, None]).astype(np.int8)
            v[name + "_scale"] = scale.astype(np.float32)
        else:
            v[name] = arr

    def lin(dst, src, bias=True):
        put(f"{dst}/weight", state[f"{src}.weight"], weight=True)
        if bias:
            put(f"{dst}/bias", state[f"{src}.bias"])

    def norm(dst, src):
        v[f"{dst}/gamma"], v[f"{dst}/beta"] = state[f"{src}.weight"], state[f"{src}.bias"]

    def fused(dst, src, parts):
        put(f"{dst}/weight", np.concatenate([state[f"{src}.{p}.weight"] for p in parts]), weight=True)
        put(f"{dst}/bias", np.concatenate([state.get(f"{src}.{p}.bias", np.zeros(state[f"{src}.{p}.weight"].shape[0], np.float32)) for p in parts]))

    for c in ("conv1", "conv2"):
        v[f"encoder/{c}/weight"], v[f"encoder/{c}/bias"] = state[f"model.encoder.{c}.weight"], state[f"model.encoder.{c}.bias"]
    v["encoder/position_encodings/encodings"] = state["model.encoder.embed_positions.weight"]
    v["encoder/num_heads"] = np.array(heads, dtype=np.int16)
    v["decoder/num_heads"] = np.array(heads, dtype=np.int16)
    for i in range(enc_layers):
        s, d = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ["q_proj", "k_proj", "v_proj"])
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        lin(f"{d}/ffn/linear_0", f"{s}.fc1"), lin(f"{d}/ffn/linear_1", f"{s}.fc2")
        norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
    norm("encoder/layer_norm", "model.encoder.layer_norm")
    v["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    v["decoder/position_encodings/encodings"] = state["model.decoder.embed_positions.weight"]
    for i in range(dec_layers):
        s, d = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        fused(f"{d}/self_attention/linear_0", f"{s}.self_attn", ["q_proj", "k_proj", "v_proj"])
        lin(f"{d}/self_attention/linear_1", f"{s}.self_attn.out_proj")
        norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
        lin(f"{d}/attention/linear_0", f"{s}.encoder_attn.q_proj")
        fused(f"{d}/attention/linear_1", f"{s}.encoder_attn", ["k_proj", "v_proj"])
        lin(f"{d}/attention/linear_2", f"{s}.encoder_attn.out_proj")
        norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
        lin(f"{d}/ffn/linear_0", f"{s}.fc1"), lin(f"{d}/ffn/linear_1", f"{s}.fc2")
        norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
    norm("decoder/layer_norm", "model.decoder.layer_norm")
    return v


def test_reads_the_bundled_model():
    spec, variables = ct2.read_model_bin(models.bundled_dir() / "model.bin")
    assert spec == "WhisperSpec"
    assert variables["decoder/embeddings/weight"].shape == (51864, 384)
    assert variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]  # alias resolved
    assert variables["encoder/layer_3/self_attention/linear_0/weight"].shape == (1152, 384)


@pytest.mark.parametrize("quantize", [False, True])
def test_round_trip_through_a_synthetic_faster_whisper_dir(tmp_path, tiny_random_model, bundled_checkpoint, quantize):
    from safetensors.numpy import load_file

    state = load_file(str(tiny_random_model / "model.safetensors"))
    src = tmp_path / "fw"
    src.mkdir()
    write_ct2(src / "model.bin", hf_to_ct2(state, 2, 2, 2, quantize), aliases=[("decoder/projection/weight", "decoder/embeddings/weight")])
    (src / "config.json").write_text(json.dumps(json.loads((models.bundled_dir() / "config.json").read_text())))
    shutil.copy(models.bundled_dir() / "tokenizer.json", src / "tokenizer.json")
    out = tmp_path / "hf"
    info = ct2.convert(src, out)
    assert info["architecture"]["d_model"] == 64 and info["architecture"]["encoder_layers"] == 2
    got = load_file(str(out / "model.safetensors"))
    for name, ref in state.items():
        if name == "proj_out.weight":
            continue
        tol = 0.02 * np.abs(ref).max() if quantize else 0
        np.testing.assert_allclose(got[name], ref, atol=tol + 1e-7, err_msg=name)
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["no_timestamps_token_id"] == 50362 and gen["decoder_start_token_id"] == 50257 and not gen["is_multilingual"]


def _valid_prefix(tmp_path, data: bytes) -> Path:
    p = tmp_path / "model.bin"
    p.write_bytes(data)
    return p


@pytest.mark.parametrize("cut", [0, 3, 10, 40, 200, 5000])
def test_truncated_files_raise_conversion_error(tmp_path, cut):
    data = (models.bundled_dir() / "model.bin").open("rb").read(cut)
    with pytest.raises(ConversionError):
        ct2.read_model_bin(_valid_prefix(tmp_path, data))


def test_wrong_version_and_garbage(tmp_path):
    with pytest.raises(ConversionError, match="format version 99"):
        ct2.read_model_bin(_valid_prefix(tmp_path, struct.pack("<I", 99) + b"\x00" * 64))
    with pytest.raises(ConversionError):
        ct2.read_model_bin(_valid_prefix(tmp_path, b"this is not a model at all, just text" * 3))


def test_bundled_hash_mismatch_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ConversionError, match="does not match the pinned"):
        cache.converted_checkpoint(models.bundled_dir(), expected_sha256="0" * 64)
    assert not any((tmp_path / "cache" / "converted").glob("model-*")), "no cache entry after a failed check"


def test_cache_is_reused_and_concurrent_first_runs_agree(tmp_path, monkeypatch):
    import concurrent.futures as cf

    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    with cf.ThreadPoolExecutor(2) as pool:
        paths = list(pool.map(lambda _: cache.converted_checkpoint(models.bundled_dir(), models.BUNDLED_SHA256), range(2)))
    assert paths[0] == paths[1] and (paths[0] / cache.MARKER).is_file()
    entries = [p for p in (tmp_path / "cache" / "converted").iterdir()]
    assert entries == [paths[0]], "no temporary directories left behind"
    mtime = (paths[0] / "model.safetensors").stat().st_mtime_ns
    assert cache.converted_checkpoint(models.bundled_dir(), models.BUNDLED_SHA256) == paths[0]
    assert (paths[0] / "model.safetensors").stat().st_mtime_ns == mtime
