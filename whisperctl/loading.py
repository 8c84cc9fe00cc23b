"""Building the model a plan asks for: pretrained or random weights, dtype, attention, quantization."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from . import models
from .config import Decoder, DType, EngineConfig, Quantization, Weights
from .eligibility import Plan
from .errors import ConversionError, ModelError, WhisperctlError

log = logging.getLogger("whisperctl")

INT8_FILE = "int8.safetensors"
TORCH_DTYPES = {DType.FP32: "float32", DType.FP16: "float16", DType.BF16: "bfloat16"}


def dtype_kwarg() -> str:
    """``from_pretrained``'s dtype argument: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    from packaging.version import Version

    from .eligibility import dist_version

    return "dtype" if Version(dist_version("transformers") or "0") >= Version("4.56") else "torch_dtype"


def quiet_transformers() -> None:
    """transformers' deprecation chatter and weight-loading bars are noise in a CLI (kept with WHISPERCTL_DEBUG)."""
    if os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0"):
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def native_applies(config: EngineConfig, plan: Plan, location: str) -> bool:
    """Whether the CPU decoding path can run on :mod:`whisperctl.native`'s modules (no transformers model code):
    pretrained safetensors weights, fp32 on the CPU, eager or SDPA attention, whisperctl's decoding loop."""
    from . import native

    return (config.weights == Weights.PRETRAINED and config.decoder in (Decoder.AUTO, Decoder.LEAN) and plan.device == "cpu"
            and plan.dtype == DType.FP32 and plan.attention.hf_name in ("eager", "sdpa") and bool(location)
            and native.available(location))


def load_model(config: EngineConfig, plan: Plan, source: models.ModelSource, native_ok: bool = True) -> tuple[Any, Any, Any]:
    """(model, tokenizer, feature extractor), on the plan's device, in eval mode. The model is
    :mod:`whisperctl.native`'s where :func:`native_applies` (and ``native_ok``), else transformers'."""
    import torch

    if plan.device == "cpu":
        torch.set_flush_denormal(True)  # fp16-converted weights make fp32 CPU matmuls hit denormals
        if config.threads:
            torch.set_num_threads(config.threads)
    location = models.checkpoint(source) if config.weights == Weights.PRETRAINED else ""
    native_path = native_ok and native_applies(config, plan, location)
    if not native_path:
        quiet_transformers()
    kwargs: dict[str, Any] = {
        "attn_implementation": plan.attention.hf_name,
        dtype_kwarg(): getattr(torch, TORCH_DTYPES[plan.dtype]),
        "use_safetensors": None if config.allow_pickle else True,
    }
    if plan.quantization != Quantization.NONE and plan.device.startswith("cuda"):
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = (
            BitsAndBytesConfig(load_in_8bit=True)
            if plan.quantization == Quantization.INT8
            else BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=kwargs[dtype_kwarg()])
        )
        kwargs["device_map"] = {"": plan.device}

    def build() -> tuple[Any, Any, Any]:
        if config.weights == Weights.RANDOM:
            return _random_model(config.model, plan.device, kwargs)
        if native_path:
            from . import native

            model = native.load(location, plan.attention.hf_name)
            if native.available_frontend(location):  # no transformers import at all
                tokenizer, features = native.Tokenizer(location), native.LogMel(location)
            else:
                tokenizer, features = _transformers_frontend(source, location)
        else:
            from transformers import WhisperForConditionalGeneration

            tokenizer, features = _transformers_frontend(source, location)
            model = models.from_pretrained(WhisperForConditionalGeneration, source, location, **kwargs)
        if models.is_converted(source):
            _check_loaded(model, tokenizer, location)
        return model, tokenizer, features

    try:
        try:
            model, tokenizer, features = build()
        except Exception:  # noqa: BLE001 - a damaged conversion fails in any way: verify it in full, rebuild, retry
            if config.weights != Weights.PRETRAINED or not models.repair(source):
                raise
            model, tokenizer, features = build()
    except WhisperctlError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers/safetensors/tokenizers raise many types
        if not config.allow_pickle and models.has_only_pickle_weights(location):
            raise ModelError(
                f"--model {source.name}: {location} has only pickle weights (.bin/.pt), which can run code "
                "when loaded. Convert it to safetensors, or pass --allow-pickle to load it with weights_only=True."
            ) from None
        raise models.load_error(source, exc) from exc
    if "device_map" not in kwargs:
        model = model.to(plan.device)
    if plan.quantization == Quantization.INT8 and plan.device == "cpu":
        from .int8 import quantize_linears

        quantize_linears(model, int8_store(model, location))
        if native_path:
            from .native import half_embedding

            half_embedding(model)
    model.eval()
    if plan.device == "cpu":
        encode_in_slices(model, 1)
        _return_freed_memory()
    return model, tokenizer, features


def int8_store(model: Any, location: str) -> Path | None:
    """The int8 integers and scales of ``model`` (the checkpoint at ``location``), quantized once into the cache
    (``<cache>/int8/<checkpoint>-<key>/``, keyed by the checkpoint's path, its weights' sizes and modification
    times, torch's version and the store's format; verified like a conversion) so that a later load only packs
    them: 0.26 -> 0.12 s of tiny.en's load on 2 cores. None (quantize in memory) for a checkpoint that is not a
    local directory, or when the cache cannot be written (a full disk, a read-only cache: said in one warning line;
    the run goes on)."""
    import torch

    from . import int8
    from .cache import build_entry, int8_root, io_reason
    from .openai_format import checkpoint_key

    checkpoint = Path(location).resolve() if location else None
    if checkpoint is None or not (checkpoint / "config.json").is_file():
        return None
    key = checkpoint_key(checkpoint, str(int8.STORE_VERSION), torch.__version__,
                         files=("*.safetensors", "*.bin", "*.pt", "*.pth", "config.json"))

    def build(directory: Path) -> dict[str, Any]:
        try:
            linears = int8.write_store(model, directory / INT8_FILE)
        except Exception as exc:
            if type(exc).__name__ != "SafetensorError":  # safetensors' own error for a full disk or a size limit
                raise
            raise OSError(io_reason(exc)) from None  # a write that failed, as build_entry reports one
        return {"source": str(checkpoint), "format_version": int8.STORE_VERSION, "torch": torch.__version__,
                "linears": linears}

    try:
        entry, _ = build_entry(int8_root(), f"{checkpoint.name}-{key}", build, "int8 weights")
    except ConversionError as exc:
        log.warning("%s Quantizing in memory.", exc)
        return None
    return entry / INT8_FILE


def _transformers_frontend(source: models.ModelSource, location: str) -> tuple[Any, Any]:
    from transformers import WhisperFeatureExtractor
    from transformers import WhisperTokenizerFast as WhisperTokenizer  # tokenizers-backed in 4.x; alias in 5.x

    quiet_transformers()
    return models.from_pretrained(WhisperTokenizer, source, location), models.from_pretrained(WhisperFeatureExtractor, source, location)


def _check_loaded(model: Any, tokenizer: Any, location: str) -> None:
    """Catch what loads without an error but cannot work: an empty vocabulary, non-finite weights."""
    import torch

    if len(tokenizer) < 1000:
        raise ModelError(f"{location}: the tokenizer has {len(tokenizer)} tokens; its files are damaged.")
    for name, param in model.named_parameters():
        # A NaN or an infinity makes the sum non-finite (as would finite weights near 1e38: damaged too); one
        # pass without a boolean copy of the weights (tiny.en: 16 ms against 180 ms for isfinite().all()). The sum
        # accumulates in fp32 whatever the weight's dtype: an fp16 tensor of sound weights can sum past fp16's
        # largest value (tiny.en's positional embedding: ~119,648 > 65,504) and would read as damaged.
        if param.is_floating_point() and not torch.isfinite(param.sum(dtype=torch.float32)):
            raise ModelError(f"{location}: weight {name} holds NaN or infinite values; the checkpoint is damaged.")


def _return_freed_memory() -> None:
    """Give the heap pages freed while loading (fp32 Linear weights replaced by int8 ones, loader buffers) back
    to the OS with glibc's ``malloc_trim``; measured on tiny.en: 70 MB less peak RSS. A no-op elsewhere."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        pass


def encode_in_slices(model: Any, windows: int) -> None:
    """Make the encoder run ``windows`` windows per call however many generate() hands it, and concatenate.

    On the CPU a batch of 8 windows makes every encoder activation 8x larger (tiny.en's MLP: 74 MB a layer);
    such blocks are mmap'ed and page-faulted afresh on each call, and fall out of cache. One window at a time
    does the same arithmetic on 9 MB blocks: measured on 2 cores, the first batch in a process went from
    2.5 s to 1.2 s, later ones from 1.5 s to 1.2 s, and peak RSS fell by about 250 MB. The decoder still runs
    the whole batch at once, which is where batching pays on a CPU.
    """
    import torch

    encoder = model.get_encoder()
    whole = encoder.forward

    def forward(input_features, *args, **kwargs):
        n = input_features.shape[0]
        if n <= windows or args or kwargs.get("output_attentions") or kwargs.get("output_hidden_states"):
            return whole(input_features, *args, **kwargs)
        parts = [whole(input_features[i : i + windows], *args, **kwargs) for i in range(0, n, windows)]
        hidden = torch.cat([p[0] for p in parts])
        return (hidden,) if isinstance(parts[0], tuple) else type(parts[0])(last_hidden_state=hidden)

    encoder.forward = forward


def _random_model(name: str, device: str, kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
    """The alias's architecture with random weights; tokenizer and generation ids from the bundled model (or the
    stand-in :func:`models.random_weights_reference` names)."""
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )
    from transformers import WhisperTokenizerFast as WhisperTokenizer

    bundled = models.random_weights_reference()
    ref = models.checkpoint(bundled)
    tokenizer = models.from_pretrained(WhisperTokenizer, bundled, ref)
    arch = models.architecture(name)
    if arch is None:
        raise ModelError(f"--weights random: no architecture on record for '{name}'.")
    features = WhisperFeatureExtractor(feature_size=arch["num_mel_bins"])
    gen = GenerationConfig.from_pretrained(ref)
    gen.is_multilingual = False  # random weights: no language detection, fixed English prompt
    gen.alignment_heads = [[arch["decoder_layers"] - 1, 0]]
    config = WhisperConfig(
        **arch, decoder_start_token_id=gen.decoder_start_token_id, bos_token_id=gen.bos_token_id,
        eos_token_id=gen.eos_token_id, pad_token_id=gen.pad_token_id, begin_suppress_tokens=None, suppress_tokens=None,
    )
    config._attn_implementation = kwargs["attn_implementation"]
    # Build on the meta device and fill in place: transformers' per-module init takes ~30 s for large-v3 on CPU.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model = model.to_empty(device=device).to(kwargs[dtype_kwarg()])
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for pname, param in model.named_parameters():
            if "layer_norm" in pname:
                param.fill_(1.0 if pname.endswith("weight") else 0.0)
            else:
                param.uniform_(-0.0346, 0.0346, generator=generator)  # std 0.02; uniform_ is 5x faster than normal_
        for _, buf in model.named_buffers():
            buf.zero_()
    model.tie_weights()
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(kwargs["attn_implementation"])
    model.generation_config = gen
    return model, tokenizer, features
