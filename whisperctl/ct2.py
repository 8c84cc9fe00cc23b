"""Read CTranslate2 (faster-whisper) Whisper models and convert them to transformers checkpoints.

The ``model.bin`` layout (format version 6, little-endian): u32 version, string spec name, u32 revision,
u32 variable count, then per variable: string name, u8 rank, u32 dims[rank], u8 dtype, u32 byte count,
bytes; then u32 alias count and (alias, target) string pairs. Strings are a u16 length (including a
trailing NUL) followed by the bytes. int8/int16-quantized weights carry a ``<name>_scale`` companion and
are dequantized as ``q / scale``.

The converted checkpoints live in the cache (:mod:`whisperctl.cache`), which verifies and rebuilds them.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConversionError

SUPPORTED_FORMAT_VERSIONS = (5, 6)
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bf16
_MAX_VARIABLES = 100_000
_MAX_RANK = 8


def is_ct2_dir(path: Path) -> bool:
    return path.is_dir() and (path / "model.bin").is_file() and (path / "config.json").is_file() and (
        (path / "tokenizer.json").is_file() or (path / "vocabulary.txt").is_file() or (path / "vocabulary.json").is_file()
    )


class _Reader:
    def __init__(self, buf: memoryview, source: Path):
        self.buf, self.pos, self.source = buf, 0, source

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise ConversionError(f"{self.source}: truncated CTranslate2 model (needs {n} bytes at offset {self.pos}).")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        n = self.u("H")
        raw = bytes(self.take(n))
        try:
            return raw.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError:
            raise ConversionError(f"{self.source}: corrupt name at offset {self.pos - n}.") from None


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """Parse ``model.bin``; returns the spec name and every variable (aliases resolved) as numpy arrays.

    Large arrays are views into a read-only memory map, so reading costs no copy.
    """
    path = Path(path)
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConversionError(f"{path}: cannot open CTranslate2 model: {exc.strerror or exc}.") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size < 16:
            raise ConversionError(f"{path}: {size} bytes is too small to be a CTranslate2 model.")
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    r = _Reader(memoryview(mapped), path)
    version = r.u("I")
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise ConversionError(
            f"{path}: CTranslate2 format version {version} is not supported (supported: "
            f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))}). Re-export it with ctranslate2 ≥ 3."
        )
    spec = r.string()
    r.u("I")  # spec revision
    count = r.u("I")
    if count > _MAX_VARIABLES:
        raise ConversionError(f"{path}: implausible variable count {count}; the file is corrupt.")
    variables: dict[str, np.ndarray] = {}
    for _ in range(count):
        name = r.string()
        rank = r.u("B")
        if rank > _MAX_RANK:
            raise ConversionError(f"{path}: variable {name!r} has rank {rank}; the file is corrupt.")
        dims = [r.u("I") for _ in range(rank)]
        code = r.u("B")
        nbytes = r.u("I")
        if code not in _DTYPES:
            raise ConversionError(f"{path}: variable {name!r} has unknown dtype code {code}.")
        data = r.take(nbytes)
        if code == 5:  # bf16: widen to fp32 through the upper 16 bits
            expected = int(np.prod(dims, dtype=np.int64)) * 2
            if expected != nbytes:
                raise ConversionError(f"{path}: variable {name!r} byte count does not match its shape.")
            raw = np.frombuffer(data, dtype=np.uint16).astype(np.uint32) << 16
            array = raw.view(np.float32).reshape(dims)
        else:
            dtype = np.dtype(_DTYPES[code])
            if int(np.prod(dims, dtype=np.int64)) * dtype.itemsize != nbytes:
                raise ConversionError(f"{path}: variable {name!r} byte count does not match its shape {dims}.")
            array = np.frombuffer(data, dtype=dtype).reshape(dims)
        variables[name] = array
    if r.pos < len(r.buf):
        for _ in range(r.u("I")):
            alias, target = r.string(), r.string()
            if target in variables:
                variables[alias] = variables[target]
    return spec, variables


def _dequantized(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    try:
        array = variables[name]
    except KeyError:
        raise ConversionError(f"CTranslate2 model lacks variable {name!r}; not a Whisper model this converter knows.") from None
    scale = variables.get(name + "_scale")
    if array.dtype in (np.int8, np.int16):
        if scale is None:
            raise ConversionError(f"quantized variable {name!r} has no scale; this quantization is not supported.")
        scale = scale.astype(np.float32)
        if scale.ndim == 1 and array.ndim == 2:
            scale = scale[:, None]
        return array.astype(np.float32) / scale
    if array.dtype not in (np.float32, np.float16):
        raise ConversionError(f"variable {name!r} has dtype {array.dtype}, which is not a weight type.")
    return array


def _scalar(variables: dict[str, np.ndarray], name: str, default: int) -> int:
    value = variables.get(name)
    return int(value.reshape(-1)[0]) if value is not None and value.size else default


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while f"{prefix}/layer_{n}/ffn/linear_0/weight" in variables:
        n += 1
    return n


def _convert_weights(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    g = lambda name: _dequantized(variables, name)  # noqa: E731
    weights: dict[str, np.ndarray] = {}

    def linear(dst: str, src: str, bias: bool = True) -> None:
        weights[f"{dst}.weight"] = g(f"{src}/weight")
        if bias:
            weights[f"{dst}.bias"] = g(f"{src}/bias")

    def norm(dst: str, src: str) -> None:
        weights[f"{dst}.weight"] = g(f"{src}/gamma")
        weights[f"{dst}.bias"] = g(f"{src}/beta")

    def fused(dst_prefix: str, names: list[str], src: str) -> None:
        w, b = g(f"{src}/weight"), g(f"{src}/bias")
        if w.shape[0] % len(names):
            raise ConversionError(f"fused projection {src} has {w.shape[0]} rows, not divisible by {len(names)}.")
        for part, wi, bi in zip(names, np.split(w, len(names)), np.split(b, len(names))):
            weights[f"{dst_prefix}.{part}.weight"] = wi
            if part != "k_proj":  # Whisper's key projection has no bias (CTranslate2 stores zeros)
                weights[f"{dst_prefix}.{part}.bias"] = bi

    conv1 = g("encoder/conv1/weight")
    d_model, n_mels = int(conv1.shape[0]), int(conv1.shape[1])
    enc_layers = _count_layers(variables, "encoder")
    dec_layers = _count_layers(variables, "decoder")
    if not enc_layers or not dec_layers:
        raise ConversionError("CTranslate2 model has no encoder/decoder layers; not a Whisper model.")

    for name in ("conv1", "conv2"):
        linear(f"model.encoder.{name}", f"encoder/{name}")
    weights["model.encoder.embed_positions.weight"] = g("encoder/position_encodings/encodings")
    for i in range(enc_layers):
        src, dst = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        fused(f"{dst}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    norm("model.encoder.layer_norm", "encoder/layer_norm")

    embeddings = g("decoder/embeddings/weight")
    weights["model.decoder.embed_tokens.weight"] = embeddings
    weights["model.decoder.embed_positions.weight"] = g("decoder/position_encodings/encodings")
    for i in range(dec_layers):
        src, dst = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        fused(f"{dst}.self_attn", ["q_proj", "k_proj", "v_proj"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
        norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
        linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
        fused(f"{dst}.encoder_attn", ["k_proj", "v_proj"], f"{src}/attention/linear_1")
        linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
        norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
        linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
        linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
        norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")

    enc_heads = _scalar(variables, "encoder/num_heads", max(1, d_model // 64))
    dec_heads = _scalar(variables, "decoder/num_heads", enc_heads)
    arch = {
        "d_model": d_model,
        "num_mel_bins": n_mels,
        "encoder_layers": enc_layers,
        "decoder_layers": dec_layers,
        "encoder_attention_heads": enc_heads,
        "decoder_attention_heads": dec_heads,
        "encoder_ffn_dim": int(weights["model.encoder.layers.0.fc1.weight"].shape[0]),
        "decoder_ffn_dim": int(weights["model.decoder.layers.0.fc1.weight"].shape[0]),
        "vocab_size": int(embeddings.shape[0]),
        "max_source_positions": int(weights["model.encoder.embed_positions.weight"].shape[0]),
        "max_target_positions": int(weights["model.decoder.embed_positions.weight"].shape[0]),
    }
    return weights, arch


def _token_ids(vocab: dict[str, int]) -> dict[str, int]:
    """Special token ids looked up by their text, so the same code serves .en and multilingual vocabularies."""
    names = {
        "eos": "<|endoftext|>",
        "sot": "<|startoftranscript|>",
        "translate": "<|translate|>",
        "transcribe": "<|transcribe|>",
        "prev": "<|startofprev|>",
        "nospeech": "<|nospeech|>",
        "nocaptions": "<|nocaptions|>",
        "notimestamps": "<|notimestamps|>",
    }
    return {key: vocab[text] for key, text in names.items() if text in vocab}


def _generation_config(ct2_config: dict[str, Any], tokenizer: Any, arch: dict[str, Any]) -> dict[str, Any]:
    vocab = tokenizer.get_vocab()
    ids = _token_ids(vocab)
    for required in ("eos", "sot", "notimestamps"):
        if required not in ids:
            raise ConversionError(f"tokenizer lacks the Whisper special token for {required!r}.")
    multilingual = arch["vocab_size"] >= 51865
    id_to_token = {v: k for k, v in vocab.items()}
    gen: dict[str, Any] = {
        "_from_model_config": False,
        "bos_token_id": ids["eos"],
        "eos_token_id": ids["eos"],
        "pad_token_id": ids["eos"],
        "decoder_start_token_id": ids["sot"],
        "no_timestamps_token_id": ids["notimestamps"],
        "prev_sot_token_id": ids.get("prev"),
        "max_initial_timestamp_index": 50,  # first timestamp at most 1.0 s, as openai-whisper
        "max_length": arch["max_target_positions"],
        "return_timestamps": False,
        "is_multilingual": multilingual,
        "suppress_tokens": sorted(int(t) for t in ct2_config.get("suppress_ids", [])),
        "begin_suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids_begin", [220, ids["eos"]])],
        "alignment_heads": [[int(a), int(b)] for a, b in ct2_config.get("alignment_heads", [])],
    }
    if multilingual:
        gen["lang_to_id"] = {id_to_token[i]: int(i) for i in ct2_config.get("lang_ids", []) if i in id_to_token}
        gen["task_to_id"] = {"transcribe": ids["transcribe"], "translate": ids["translate"]}
    gen["forced_decoder_ids"] = None  # transformers derives the prompt from language/task/timestamps
    if not gen["alignment_heads"]:
        # Without measured heads, openai-whisper uses the last half of the decoder layers, all heads.
        layers, heads = arch["decoder_layers"], arch["decoder_attention_heads"]
        gen["alignment_heads"] = [[l, h] for l in range(layers // 2, layers) for h in range(heads)]
    return gen


def _load_tokenizer(ct2_dir: Path) -> Any:
    from transformers import WhisperTokenizerFast  # the tokenizers-backed class in 4.x; an alias in 5.x

    tok_file = ct2_dir / "tokenizer.json"
    if not tok_file.is_file():
        raise ConversionError(f"{ct2_dir}: no tokenizer.json; only faster-whisper directories with one are supported.")
    try:
        return WhisperTokenizerFast(tokenizer_file=str(tok_file))
    except Exception as exc:  # tokenizers raises its own exception types
        raise ConversionError(f"{ct2_dir}/tokenizer.json cannot be loaded: {exc}") from None


def convert(ct2_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper directory into a transformers checkpoint at ``out_dir`` (must not exist)."""
    import torch
    from safetensors.torch import save_file
    from transformers import WhisperConfig, WhisperFeatureExtractor

    ct2_dir, out_dir = Path(ct2_dir), Path(out_dir)
    try:
        ct2_config = json.loads((ct2_dir / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{ct2_dir}/config.json cannot be read: {exc}") from None
    spec, variables = read_model_bin(ct2_dir / "model.bin")
    if spec != "WhisperSpec":
        raise ConversionError(f"{ct2_dir}: CTranslate2 spec is {spec!r}, not a Whisper model.")
    weights, arch = _convert_weights(variables)
    tokenizer = _load_tokenizer(ct2_dir)
    gen = _generation_config(ct2_config, tokenizer, arch)

    stored = {a.dtype for a in weights.values()}
    torch_dtype = "float16" if stored == {np.dtype(np.float16)} else "float32"
    config = WhisperConfig(
        **arch,
        decoder_start_token_id=gen["decoder_start_token_id"],
        bos_token_id=gen["bos_token_id"],
        eos_token_id=gen["eos_token_id"],
        pad_token_id=gen["pad_token_id"],
        begin_suppress_tokens=None,  # generation_config.json holds them; duplicates here trigger warnings
        suppress_tokens=None,
        tie_word_embeddings=True,
        torch_dtype=torch_dtype,
    )
    out_dir.mkdir(parents=True)
    tensors = {k: torch.from_numpy(np.array(v, copy=True)) for k, v in weights.items()}
    save_file(tensors, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out_dir)
    (out_dir / "generation_config.json").write_text(json.dumps(gen, indent=2))
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=arch["num_mel_bins"]).save_pretrained(out_dir)
    return {"architecture": arch, "stored_dtype": torch_dtype}
