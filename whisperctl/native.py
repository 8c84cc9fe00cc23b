"""Whisper's weights in plain PyTorch modules, for the CPU decoding path: start-up without transformers' model code.

Importing transformers' Whisper model code costs 2.5-3 s on a 2-core machine (transformers 5.x pulls in
torch.distributed's tensor-parallel code, its kernel hub and, through its loss functions, scipy) — more than
the whole transcription of an 11 s clip. On the CPU the decoder already runs in whisperctl's lean loop
(:mod:`whisperctl.leanloop`), which calls only the layers' Linear, LayerNorm and Embedding modules; the encoder
is a short stack of the same. This module builds exactly those modules, with transformers' parameter names, and
fills them from the checkpoint's ``model.safetensors`` and ``config.json``: the same weights, the same operations
in the same order (the encoder forward mirrors ``WhisperEncoder.forward``; tests compare the two).

What it does not do is everything else transformers' model does (``generate()`` and its scoring pass):
:class:`whisperctl.loaded.LoadedModel` loads transformers' model on first need for those, with the same weights
and quantization. Word timing (:meth:`whisperctl.leanloop.LeanDecoder.cross_attention`) and language detection
run on these modules.
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn

WEIGHTS = "model.safetensors"


def available(location: str | Path) -> bool:
    """Whether ``location`` holds what this module loads (a safetensors Whisper checkpoint)."""
    path = Path(location)
    if not ((path / WEIGHTS).is_file() and (path / "config.json").is_file()):
        return False
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return config.get("model_type") == "whisper" and config.get("activation_function", "gelu") == "gelu" \
        and not config.get("scale_embedding", False)


def _embedding(rows: int, dim: int) -> nn.Embedding:
    # given its weight, Embedding skips its random init: on the meta device that init imports torch._dynamo (1 s)
    return nn.Embedding(rows, dim, _weight=torch.empty(rows, dim))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)


class _EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int, attention: str):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.attention = attention

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        att = self.self_attn
        b, n, _ = hidden.shape
        x = self.self_attn_layer_norm(hidden)
        q = (att.q_proj(x) * att.scaling).view(b, n, -1, att.head_dim).transpose(1, 2).contiguous()
        k = att.k_proj(x).view(b, n, -1, att.head_dim).transpose(1, 2).contiguous()
        v = att.v_proj(x).view(b, n, -1, att.head_dim).transpose(1, 2).contiguous()
        if self.attention == "sdpa":
            o = nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)
        else:
            o = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(2, 3)), dim=-1, dtype=torch.float32).to(q.dtype), v)
        hidden = hidden + att.out_proj(o.transpose(1, 2).contiguous().reshape(b, n, -1))
        x = self.final_layer_norm(hidden)
        return hidden + self.fc2(nn.functional.gelu(self.fc1(x)))


class _DecoderLayer(nn.Module):
    """Weights only: the lean loop runs the decoder step (see :mod:`whisperctl.leanloop`)."""

    def __init__(self, dim: int, heads: int, ffn: int):
        super().__init__()
        self.self_attn = _Attention(dim, heads)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.encoder_attn = _Attention(dim, heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.activation_fn = nn.functional.gelu


class Encoder(nn.Module):
    def __init__(self, c: dict, attention: str):
        super().__init__()
        dim = c["d_model"]
        self.conv1 = nn.Conv1d(c["num_mel_bins"], dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, kernel_size=3, stride=2, padding=1)
        self.embed_positions = _embedding(c["max_source_positions"], dim)
        self.layers = nn.ModuleList(
            _EncoderLayer(dim, c["encoder_attention_heads"], c["encoder_ffn_dim"], attention) for _ in range(c["encoder_layers"]))
        self.layer_norm = nn.LayerNorm(dim)

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor]:
        x = nn.functional.gelu(self.conv1(input_features))
        x = nn.functional.gelu(self.conv2(x)).permute(0, 2, 1)
        hidden = x + self.embed_positions.weight
        for layer in self.layers:
            hidden = layer(hidden)
        return (self.layer_norm(hidden),)


class Decoder(nn.Module):
    def __init__(self, c: dict):
        super().__init__()
        dim = c["d_model"]
        self.embed_tokens = _embedding(c["vocab_size"], dim)
        self.embed_positions = _embedding(c["max_target_positions"], dim)
        self.layers = nn.ModuleList(
            _DecoderLayer(dim, c["decoder_attention_heads"], c["decoder_ffn_dim"]) for _ in range(c["decoder_layers"]))
        self.layer_norm = nn.LayerNorm(dim)


class _Body(nn.Module):
    def __init__(self, c: dict, attention: str):
        super().__init__()
        self.encoder = Encoder(c, attention)
        self.decoder = Decoder(c)


class NativeWhisper(nn.Module):
    """Whisper's modules under transformers' names (``model.encoder…``, ``model.decoder…``, ``proj_out``)."""

    def __init__(self, c: dict, generation: dict, attention: str):
        super().__init__()
        self.model = _Body(c, attention)
        self.proj_out = nn.Linear(c["d_model"], c["vocab_size"], bias=False)
        self.config = types.SimpleNamespace(max_target_positions=c["max_target_positions"], _attn_implementation=attention,
                                            model_type="whisper")
        self.generation_config = _GenerationConfig(generation)

    def get_encoder(self) -> Encoder:
        return self.model.encoder

    def get_decoder(self) -> Decoder:
        return self.model.decoder


class _GenerationConfig(types.SimpleNamespace):
    """generation_config.json's fields as attributes (None when absent), as transformers' GenerationConfig."""

    def __init__(self, fields: dict):
        super().__init__(**fields)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


def load(location: str | Path, attention: str) -> NativeWhisper:
    """The checkpoint at ``location`` in fp32 on the CPU (``attention``: eager or sdpa, the encoder's attention)."""
    from safetensors.torch import load_file

    path = Path(location)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    gen_path = path / "generation_config.json"
    generation = json.loads(gen_path.read_text(encoding="utf-8")) if gen_path.is_file() else {}
    for key in ("decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"):
        generation.setdefault(key, config.get(key))
    generation.setdefault("max_length", config.get("max_length") or config["max_target_positions"])
    with torch.device("meta"):
        model = NativeWhisper(config, generation, attention)
    state = {k: v.float() for k, v in load_file(str(path / WEIGHTS)).items()}
    state.setdefault("proj_out.weight", state["model.decoder.embed_tokens.weight"])  # tied to the embeddings
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise ValueError(f"{path / WEIGHTS}: missing weights {', '.join(missing[:5])}")
    if unexpected:
        raise ValueError(f"{path / WEIGHTS}: unexpected weights {', '.join(unexpected[:5])}")
    return model.eval()


def half_embedding(model: Any) -> bool:
    """Keep the decoder's token embedding (vocabulary x width: 80 MB in fp32 for tiny.en, 265 MB for large-v3) in
    fp16 where every weight of it is an fp16 value (checkpoints converted from fp16, as the bundled one), once the
    output projection no longer reads it (int8 replaced it). The step adds the positions (fp32) to the looked-up
    rows, which promotes them to fp32 exactly: the same numbers. Returns whether it did."""
    embedding = model.get_decoder().embed_tokens
    weight = embedding.weight
    if weight.dtype != torch.float32 or type(model.proj_out) is nn.Linear:  # (fp32 proj_out may share the weight)
        return False
    half = weight.detach().half()
    if not torch.equal(half.float(), weight.detach()):
        return False
    embedding.weight = nn.Parameter(half, requires_grad=False)
    return True


class Tokenizer:
    """The checkpoint's ``tokenizer.json`` through the ``tokenizers`` library, with the few methods of
    transformers' WhisperTokenizerFast that whisperctl calls (tests compare the two on real transcripts)."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer as Backend

        self._backend = Backend.from_file(str(Path(path) / "tokenizer.json"))
        vocab = self._backend.get_vocab(with_added_tokens=True)
        self._vocab = vocab
        config = {}
        config_path = Path(path) / "tokenizer_config.json"
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
        eos = config.get("eos_token", "<|endoftext|>")
        eos = eos.get("content") if isinstance(eos, dict) else eos
        self.eos_token_id = vocab[eos]

    def __len__(self) -> int:
        return len(self._vocab)

    def get_vocab(self) -> dict[str, int]:
        return dict(self._vocab)

    def convert_ids_to_tokens(self, tok: int) -> str | None:
        return self._backend.id_to_token(int(tok))

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self._backend.decode([int(t) for t in ids], skip_special_tokens=skip_special_tokens)


def available_frontend(path: str | Path) -> bool:
    """Whether the tokenizer and the feature extractor can be built without transformers."""
    path = Path(path)
    if not (path / "tokenizer.json").is_file():
        return False
    try:
        pre = json.loads((path / "preprocessor_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (pre.get("feature_extractor_type") == "WhisperFeatureExtractor" and pre.get("sampling_rate") == 16000
            and pre.get("n_fft", 400) == 400 and pre.get("hop_length", 160) == 160 and not pre.get("dither")
            and pre.get("n_samples", 480000) == 480000)


class LogMel:
    """Whisper's log-mel features as transformers' WhisperFeatureExtractor computes them with torch (each input
    zero-padded or cut to 30 s; Hann-window STFT, slaney mel filters, log10, 8-decade floor, (x + 4) / 4)."""

    n_fft, hop_length, n_samples, sampling_rate = 400, 160, 480_000, 16_000

    def __init__(self, path: str | Path):
        pre = json.loads((Path(path) / "preprocessor_config.json").read_text(encoding="utf-8"))
        self.feature_size = int(pre.get("feature_size", 80))
        self.mel_filters = mel_filters(self.feature_size)
        self._filters = torch.from_numpy(self.mel_filters).float().T.contiguous()
        self._window = torch.hann_window(self.n_fft)

    def __call__(self, raw_speech, sampling_rate: int = 16_000, return_tensors: str = "pt") -> types.SimpleNamespace:
        import numpy as np

        if sampling_rate != self.sampling_rate:
            raise ValueError(f"features need {self.sampling_rate} Hz audio, got {sampling_rate}")
        batch = np.zeros((len(raw_speech), self.n_samples), dtype=np.float32)
        for i, samples in enumerate(raw_speech):
            samples = np.asarray(samples, dtype=np.float32)[: self.n_samples]
            batch[i, : len(samples)] = samples
        waveform = torch.from_numpy(batch)
        stft = torch.stft(waveform, self.n_fft, self.hop_length, window=self._window, return_complex=True)
        magnitudes = (stft[..., :-1].abs() ** 2).contiguous()
        log_spec = torch.clamp(self._filters @ magnitudes, min=1e-10).log10()
        peak = log_spec.max(dim=2, keepdim=True)[0].max(dim=1, keepdim=True)[0]
        log_spec = (torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0
        return types.SimpleNamespace(input_features=log_spec)


def mel_filters(n_mels: int, sampling_rate: int = 16_000, n_fft: int = 400):
    """Slaney-scale, slaney-normalised triangular mel filters over 0-8 kHz, shape (n_fft // 2 + 1, n_mels)
    (librosa's and transformers' ``mel_filter_bank(..., norm="slaney", mel_scale="slaney")``)."""
    import numpy as np

    logstep = 27.0 / np.log(6.4)

    def to_mel(hz):
        hz = np.asarray(hz, dtype=np.float64)
        mel = 3.0 * hz / 200.0
        return np.where(hz >= 1000.0, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) * logstep, mel)

    def to_hz(mel):
        mel = np.asarray(mel, dtype=np.float64)
        return np.where(mel >= 15.0, 1000.0 * np.exp((mel - 15.0) / logstep), 200.0 * mel / 3.0)

    edges = to_hz(np.linspace(to_mel(0.0), to_mel(8000.0), n_mels + 2))
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2 : n_mels + 2] - edges[:n_mels]))[None, :]
