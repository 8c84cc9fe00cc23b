"""A transformers Whisper checkpoint written in openai-whisper's format, once, into the cache.

openai-whisper's ``whisper.load_model(path)`` reads a ``.pt`` holding ``{"dims": ModelDimensions fields,
"model_state_dict": …}``. ``bench --engines openai-whisper`` runs the reference implementation on the very weights
the other engines load, so the transformers names are mapped back to openai-whisper's (the inverse of
transformers' ``convert_openai_to_hf.py``) and the file is written next to the converted checkpoints; nothing is
downloaded. Every tensor keeps its values and dtype: the two models compute the same function.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from .cache import cache_root
from .errors import ConversionError

#: Bump when the mapping or the file's layout changes, so stale files are not reused.
FORMAT_VERSION = 1

# transformers name fragment -> openai-whisper name fragment, applied in this order to each key
_RENAMES: list[tuple[str, str]] = [
    (r"^model\.", ""),
    (r"\.layers\.", ".blocks."),
    (r"\.self_attn\.q_proj\.", ".attn.query."),
    (r"\.self_attn\.k_proj\.", ".attn.key."),
    (r"\.self_attn\.v_proj\.", ".attn.value."),
    (r"\.self_attn\.out_proj\.", ".attn.out."),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn\.q_proj\.", ".cross_attn.query."),
    (r"\.encoder_attn\.k_proj\.", ".cross_attn.key."),
    (r"\.encoder_attn\.v_proj\.", ".cross_attn.value."),
    (r"\.encoder_attn\.out_proj\.", ".cross_attn.out."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.fc1\.", ".mlp.0."),
    (r"\.fc2\.", ".mlp.2."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"^encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^decoder\.layer_norm\.", "decoder.ln."),
    (r"^decoder\.embed_tokens\.weight$", "decoder.token_embedding.weight"),
    (r"^(encoder|decoder)\.embed_positions\.weight$", r"\1.positional_embedding"),
]


def openai_name(hf_name: str) -> str | None:
    """openai-whisper's name for a transformers Whisper parameter; None for ``proj_out`` (tied to the embedding)."""
    if hf_name.startswith("proj_out."):
        return None
    name = hf_name
    for pattern, repl in _RENAMES:
        name = re.sub(pattern, repl, name)
    return name


def dims(config: dict[str, Any]) -> dict[str, int]:
    """openai-whisper's ``ModelDimensions`` from a transformers ``config.json``; a shape it cannot express (its
    MLPs are always 4x the width) is a :class:`ConversionError`."""
    for side in ("encoder", "decoder"):
        if config.get(f"{side}_ffn_dim", 4 * config["d_model"]) != 4 * config["d_model"]:
            raise ConversionError(f"openai-whisper's model (and whisper.cpp's) has MLPs 4x its width "
                                  f"({4 * config['d_model']}); this checkpoint's {side}_ffn_dim is "
                                  f"{config[f'{side}_ffn_dim']}.")
    return {
        "n_mels": config["num_mel_bins"], "n_vocab": config["vocab_size"],
        "n_audio_ctx": config["max_source_positions"], "n_audio_state": config["d_model"],
        "n_audio_head": config["encoder_attention_heads"], "n_audio_layer": config["encoder_layers"],
        "n_text_ctx": config["max_target_positions"], "n_text_state": config["d_model"],
        "n_text_head": config["decoder_attention_heads"], "n_text_layer": config["decoder_layers"],
    }


def convert_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """transformers names -> openai-whisper names (``proj_out`` dropped: openai-whisper ties it to the embedding)."""
    out = {}
    for key, tensor in state.items():
        name = openai_name(key)
        if name is not None:
            out[name] = tensor
    return out


def _load_hf_state(checkpoint: Path) -> dict[str, Any]:
    files = sorted(checkpoint.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{checkpoint}: no .safetensors weights to write in openai-whisper's format.")
    from safetensors.torch import load_file

    state: dict[str, Any] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def checkpoint_key(checkpoint: Path, *variant: str, files: tuple[str, ...] = ("*.safetensors",)) -> str:
    """A short key for a file written from the local checkpoint ``checkpoint``: its real path, the sizes and
    modification times of its files matching ``files``, and ``variant`` (a format version, a weight type)."""
    stamp = [str(checkpoint), *variant]
    for f in sorted(p for pattern in files for p in checkpoint.glob(pattern)):
        st = f.stat()
        stamp.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(stamp).encode()).hexdigest()[:16]


def openai_checkpoint(checkpoint: str | Path) -> Path:
    """The openai-whisper ``.pt`` of a local transformers checkpoint directory, written once into the cache.

    The file is keyed by the checkpoint's real path, its weights' sizes and mtimes and :data:`FORMAT_VERSION`, and
    written through a temporary file and one rename (concurrent benchmark processes may race to write it)."""
    checkpoint = Path(checkpoint).resolve()
    config_path = checkpoint / "config.json"
    if not config_path.is_file():
        raise ConversionError(f"{checkpoint}: not a transformers checkpoint (no config.json).")
    key = checkpoint_key(checkpoint, str(FORMAT_VERSION))
    root = cache_root() / "openai-whisper"
    final = root / f"{checkpoint.name}-{key}.pt"
    if final.is_file():
        return final
    import torch

    state = convert_state_dict(_load_hf_state(checkpoint))
    payload = {"dims": dims(json.loads(config_path.read_text(encoding="utf-8"))), "model_state_dict": state}
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".part", dir=root)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(payload, fh)
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as exc:
        raise ConversionError(f"cannot write the openai-whisper checkpoint into {root}: {exc.strerror or exc}.") from None
    return final
