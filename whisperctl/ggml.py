"""A transformers Whisper checkpoint written in whisper.cpp's ggml format, once, into the cache.

``bench --engines whisper.cpp`` runs whisper.cpp (through pywhispercpp) on the very weights the other engines
load, so nothing is downloaded: the checkpoint whisperctl loads (the bundled tiny.en and ``base-pypi`` converted
from CTranslate2, or a local transformers directory) is written in the layout whisper.cpp's loader reads, the
one its ``models/convert-h5-to-ggml.py`` writes:

* magic ``0x67676d6c``; eleven int32 hyper-parameters (n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
  n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype);
* the mel filters: n_mels, n_fft bins (201), then n_mels x 201 float32 (openai-whisper's ``mel_filters.npz``,
  which is librosa's slaney filter bank: whisper.cpp computes its features with them);
* the vocabulary: a count, then each token's bytes (GPT-2's byte-level alphabet decoded), length first. Only the
  text tokens, below ``<|endoftext|>``, as whisper.cpp's own model files hold: its loader names the special tokens
  itself and places them by n_vocab (English-only 51864: ``<|endoftext|>`` 50256; multilingual 51865, and
  large-v3's 51866 with 100 languages: 50257), so a checkpoint whose special tokens sit elsewhere is refused;
* every tensor: n_dims, name length, type (0 f32, 1 f16), the shape innermost first, the name, the data. Names
  are openai-whisper's (whisper.cpp kept them); ``proj_out`` is left out (tied to the token embedding). The
  matrices and convolution kernels are float16, the rest float32 (biases, layer norms, both positional
  embeddings; the convolution biases as (n, 1)), as whisper.cpp's loader expects each tensor of an f16 file.

Only f16 is written. An all-float32 file (ftype 0) loads, then aborts the process at the first convolution on the
CPU (whisper.cpp 1.8.5's ``ggml_conv_1d`` asks for an f16 kernel: whisper.cpp issue #2557). Quantized types (q5_0,
q8_0 …) are made by whisper.cpp's own ``quantize`` tool, which pywhispercpp does not ship; writing ggml's block
formats here would be a second, untested quantizer.

Each file is written once per checkpoint and type into ``<cache>/ggml/`` (through a temporary directory and one
rename, its SHA-256 recorded in the entry's marker) and verified on every use as the converted models are
(:func:`whisperctl.cache.build_entry`): a damaged file is written again.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from .cache import build_entry, ggml_root, read_marker, sha256_file
from .errors import ConversionError
from .openai_format import checkpoint_key, dims, openai_name

#: Bump when the layout written changes, so stale files are not reused.
FORMAT_VERSION = 1
MAGIC = 0x67676D6C  # "ggml"
#: The type written: whisper.cpp's own models' (header ftype 1, "mostly f16"). See the module's docstring.
GGML_TYPE = "f16"
FTYPE = 1
FILE_NAME = f"ggml-model-{GGML_TYPE}.bin"
N_FFT = 400  # whisper.cpp's WHISPER_N_FFT: the filters cover N_FFT // 2 + 1 bins
#: The hyper-parameters in the order of the header (after the magic; ftype last).
HPARAMS = ("n_vocab", "n_audio_ctx", "n_audio_state", "n_audio_head", "n_audio_layer", "n_text_ctx",
           "n_text_state", "n_text_head", "n_text_layer", "n_mels")
#: Tensors whisper.cpp keeps in float32 whatever the file's type (besides every 1-D one).
_ALWAYS_F32 = ("encoder.positional_embedding", "decoder.positional_embedding", "encoder.conv1.bias",
               "encoder.conv2.bias")
#: whisper.cpp reads the convolution biases as (n_audio_state, 1).
_COLUMN = ("encoder.conv1.bias", "encoder.conv2.bias")


def ggml_model(checkpoint: str | Path, full_check: bool = False) -> Path:
    """The ggml file of a local transformers Whisper checkpoint, written on first use into the cache and
    verified on every use (``full_check``: hashed in full, not only when its modification time changed)."""
    checkpoint = Path(checkpoint).resolve()
    if not (checkpoint / "config.json").is_file():
        raise ConversionError(f"{checkpoint}: not a transformers checkpoint (no config.json); whisper.cpp's "
                              "format is written from a local one.")
    key = checkpoint_key(checkpoint, str(FORMAT_VERSION), GGML_TYPE,
                         files=("*.safetensors", "config.json", "tokenizer.json", "vocab.json", "added_tokens.json"))

    def build(directory: Path) -> dict[str, Any]:
        target = directory / FILE_NAME
        with target.open("wb") as out:
            written = write(checkpoint, out)
        return {"source": str(checkpoint), "format_version": FORMAT_VERSION, "type": GGML_TYPE,
                "sha256": sha256_file(target), **written}

    entry, _ = build_entry(ggml_root(), f"{checkpoint.name}-{GGML_TYPE}-{key}", build, "whisper.cpp model",
                           full_check=full_check)
    return entry / FILE_NAME


def recorded(path: Path) -> dict[str, Any]:
    """What was recorded when ``path`` (a file :func:`ggml_model` returned) was written: its SHA-256, the
    hyper-parameters of its header, its counts of text tokens and tensors."""
    return read_marker(path.parent) or {}


def write(checkpoint: Path, out: BinaryIO) -> dict[str, Any]:
    """Write the ggml file of ``checkpoint`` to ``out``; return what the marker records (hparams, counts)."""
    import numpy as np

    config = _read_json(checkpoint / "config.json")
    hparams = dims(config)
    tokens = text_tokens(checkpoint, hparams["n_vocab"], config)
    out.write(struct.pack("<I", MAGIC))
    out.write(struct.pack("<11i", *(hparams[k] for k in HPARAMS), FTYPE))
    filters = mel_filters(hparams["n_mels"])
    out.write(struct.pack("<2i", *filters.shape))
    out.write(np.ascontiguousarray(filters, dtype="<f4").tobytes())
    out.write(struct.pack("<i", len(tokens)))
    for token in tokens:
        out.write(struct.pack("<i", len(token)))
        out.write(token)
    n_tensors = 0
    for name, array in tensors(checkpoint):
        encoded = name.encode("utf-8")
        ttype = 1 if array.dtype == np.float16 else 0
        out.write(struct.pack("<3i", array.ndim, len(encoded), ttype))
        out.write(struct.pack(f"<{array.ndim}i", *reversed(array.shape)))
        out.write(encoded)
        out.write(np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
        n_tensors += 1
    return {"hparams": {**hparams, "ftype": FTYPE}, "n_text_tokens": len(tokens), "n_tensors": n_tensors}


def tensors(checkpoint: Path) -> Iterator[tuple[str, Any]]:
    """(whisper.cpp name, numpy array in the type it is written) for each tensor, read one at a time."""
    import numpy as np
    import torch
    from safetensors import safe_open

    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{checkpoint}: no .safetensors weights to write in whisper.cpp's format.")
    for f in files:
        with safe_open(str(f), framework="pt") as weights:
            for key in weights.keys():
                name = openai_name(key)
                if name is None:
                    continue
                array = weights.get_tensor(key).to(torch.float32).numpy()
                if name in _COLUMN:
                    array = array.reshape(-1, 1)
                f32 = array.ndim < 2 or name in _ALWAYS_F32
                yield name, array.astype(np.float32 if f32 else np.float16)


def mel_filters(n_mels: int):
    """openai-whisper's mel filters (``mel_filters.npz`` is ``librosa.filters.mel`` saved), (n_mels, 201) float32."""
    import librosa

    return librosa.filters.mel(sr=16_000, n_fft=N_FFT, n_mels=n_mels).astype("float32")


def multilingual(n_vocab: int) -> bool:
    """Whether whisper.cpp takes a vocabulary of ``n_vocab`` for a multilingual one (its ``is_multilingual``)."""
    return n_vocab >= 51865


def expected_end_of_text(n_vocab: int) -> int:
    """Where whisper.cpp places ``<|endoftext|>`` for a vocabulary of ``n_vocab`` (it numbers the special tokens
    itself: 50256 in the English-only vocabulary, one later in the multilingual ones)."""
    return 50257 if multilingual(n_vocab) else 50256


def text_tokens(checkpoint: Path, n_vocab: int, config: dict[str, Any]) -> list[bytes]:
    """The bytes of every text token, by id, up to ``<|endoftext|>`` (excluded), from tokenizer.json or vocab.json.

    whisper.cpp numbers the special tokens from n_vocab alone; a checkpoint whose ``<|endoftext|>`` (and so every
    special token after it) sits elsewhere would decode wrongly, so it is a :class:`ConversionError`."""
    vocab = _byte_level_vocab(checkpoint)
    eot = expected_end_of_text(n_vocab)
    found = vocab.get("<|endoftext|>", config.get("eos_token_id"))
    if found != eot:
        raise ConversionError(
            f"{checkpoint}: <|endoftext|> is token {found}, and whisper.cpp places it at {eot} for a vocabulary "
            f"of {n_vocab}: its special tokens would be misread. Use a checkpoint with Whisper's own tokenizer.")
    decoder = {char: byte for byte, char in _byte_alphabet().items()}
    by_id: list[bytes] = [b""] * eot
    for token, index in vocab.items():
        if 0 <= index < eot:
            try:
                by_id[index] = bytes(decoder[c] for c in token)
            except KeyError:
                raise ConversionError(f"{checkpoint}: token {index} ({token!r}) is not in GPT-2's byte-level "
                                      "alphabet; whisper.cpp's vocabulary holds bytes.") from None
    return by_id


def _byte_level_vocab(checkpoint: Path) -> dict[str, int]:
    if (checkpoint / "tokenizer.json").is_file():
        tokenizer = _read_json(checkpoint / "tokenizer.json")
        vocab = dict((tokenizer.get("model") or {}).get("vocab") or {})
        added = tokenizer.get("added_tokens") or []
        vocab.update({t["content"]: t["id"] for t in added if isinstance(t, dict) and "content" in t})
    elif (checkpoint / "vocab.json").is_file():
        vocab = _read_json(checkpoint / "vocab.json")
        if (checkpoint / "added_tokens.json").is_file():
            vocab.update(_read_json(checkpoint / "added_tokens.json"))
    else:
        raise ConversionError(f"{checkpoint}: no tokenizer.json or vocab.json; whisper.cpp's file holds the "
                              "vocabulary.")
    if not vocab or not all(isinstance(i, int) for i in vocab.values()):
        raise ConversionError(f"{checkpoint}: its tokenizer holds no byte-level BPE vocabulary (token -> id).")
    return vocab


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (openai/gpt-2 ``encoder.py``), which Whisper's BPE vocabulary is
    written in; transformers keeps its copy in a different private module from one version to the next."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    for n, b in enumerate([b for b in range(256) if b not in table]):
        table[b] = chr(256 + n)
    return table


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConversionError(f"{path}: cannot read: {exc}.") from None
    if not isinstance(data, dict):
        raise ConversionError(f"{path}: not a JSON object.")
    return data
