"""The loaded model and everything derived from it, built complete in one place (:func:`load`).

A :class:`LoadedModel` is what every decoding step needs: the model, tokenizer and feature extractor, the plan it
was loaded under, the special token ids, the :class:`~whisperctl.backends.Backend` that runs it (whisperctl's lean
loop or transformers' ``generate()``, chosen by :func:`load` and built with the model), and small helpers (the
decoder prompt, log-mel features, the attention context that pins an SDPA backend). Nothing is set on it after
construction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import numpy as np

from . import audio as audio_mod, leanloop, models
from .config import Decoder, EngineConfig, Task
from .eligibility import Plan
from .errors import ModelError
from .loading import TORCH_DTYPES

if TYPE_CHECKING:
    from .backends import Backend

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    model: Any  # what the encoder and the lean loop run: whisperctl.native's modules or transformers' model
    tokenizer: Any
    feature_extractor: Any
    plan: Plan
    source: models.ModelSource  # english_only settled from the loaded generation config
    eos_id: int
    sot_id: int  # <|startoftranscript|>, the decoder start token
    sot_prev_id: int | None  # <|startofprev|>, opens a text prompt
    no_timestamps_id: int
    timestamp_begin: int  # the first timestamp token id (<|0.00|>)
    no_speech_id: int | None  # <|nospeech|> (<|nocaptions|> in older vocabularies)
    multilingual: bool
    max_length: int  # decoder positions
    lean_loop: dataclasses.InitVar[leanloop.LeanDecoder | None]  # the lean loop (:func:`lean_loop_for`); None: generate()
    random_weights: bool  # --weights random: speed runs; no text rules apply, windows decode untimed
    load_seconds: float
    config: EngineConfig  # the load-time options (to load transformers' model on first need)
    backend: "Backend" = dataclasses.field(init=False)  # what runs the model, built with it (from ``lean_loop``)
    _token_text: dict[int, str] = dataclasses.field(default_factory=dict, repr=False)  # a cache, filled on use

    def __post_init__(self, lean_loop: leanloop.LeanDecoder | None) -> None:
        from .backends.generate import GenerateBackend
        from .backends.lean import LeanBackend

        backend = LeanBackend(self, lean_loop) if lean_loop is not None else GenerateBackend(self)
        object.__setattr__(self, "backend", backend)  # frozen: set once, here, as the model is built

    # ------------------------------------------------------------------ models
    @property
    def native(self) -> bool:
        """Whether ``model`` is whisperctl.native's (the CPU path that does not import transformers' model code)."""
        return is_native(self.model)

    # ----------------------------------------------------------------- tokens
    def token_str(self, tok: int) -> str:
        """The vocabulary entry of ``tok`` (byte-level, 'Ġ' marks a leading space)."""
        text = self._token_text.get(tok)
        if text is None:
            text = self.tokenizer.convert_ids_to_tokens(int(tok)) or ""
            self._token_text[tok] = text
        return text

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special or timestamp tokens."""
        return self.tokenizer.decode([t for t in ids if t < self.eos_id], skip_special_tokens=True)

    def is_word_start(self, tok: int) -> bool:
        return self.token_str(tok).startswith("Ġ")

    def text_tokens(self, text: str) -> list[int]:
        """Token ids of ``text`` spoken after a space (as a prompt or previous text)."""
        return list(self.tokenizer.encode(" " + text.strip(), add_special_tokens=False))

    def prefix(self, language: str | None, task: Task, timestamps: bool) -> list[int]:
        """The decoder prompt generate() uses: start, [language, task], [no-timestamps]."""
        gen = self.model.generation_config
        prefix = [self.sot_id]
        if self.multilingual:
            prefix += [int(gen.lang_to_id[f"<|{language or 'en'}|>"]), int(gen.task_to_id[task.value])]
        if not timestamps:
            prefix.append(self.no_timestamps_id)
        return prefix

    @property
    def language_ids(self) -> dict[str, int]:
        """Language code → its token (``{}`` for English-only models)."""
        if not self.multilingual:
            return {}
        return {code.strip("<|>"): int(i) for code, i in self.model.generation_config.lang_to_id.items()}

    # --------------------------------------------------------------- compute
    def features(self, chunks: Sequence[np.ndarray]) -> Any:
        """Log-mel features of up to 30 s chunks, padded to 30 s, on the device in the plan's dtype."""
        import torch

        # One window at a time: the log-mel features are per window anyway, and 8 windows at once build a 38 MB
        # complex STFT that is page-faulted afresh each time (measured: 8 windows 0.19-0.46 s together, 0.05 s
        # one by one, identical values).
        feats = torch.cat([
            self.feature_extractor([c], sampling_rate=audio_mod.SAMPLE_RATE, return_tensors="pt").input_features
            for c in chunks
        ])
        return feats.to(self.plan.device, dtype=getattr(torch, TORCH_DTYPES[self.plan.dtype]))

    @contextlib.contextmanager
    def attention_context(self) -> Iterator[None]:
        """Inference mode, with PyTorch's SDPA backend pinned when the plan names one (``sdpa:math`` …)."""
        import torch

        backend = self.plan.attention.sdpa_backend
        with torch.inference_mode():
            if backend is None:
                yield
                return
            from torch.nn.attention import SDPBackend, sdpa_kernel

            names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH", "cudnn": "CUDNN_ATTENTION"}
            with sdpa_kernel(getattr(SDPBackend, names[backend])):
                yield

    def attention_in_effect(self) -> str:
        """What the loaded model really runs (read back from transformers), with the pinned SDPA backend."""
        actual = getattr(getattr(self.model, "config", None), "_attn_implementation", None) or self.plan.attention.hf_name
        backend = self.plan.attention.sdpa_backend
        return f"{actual}:{backend}" if backend and actual == "sdpa" else actual


def is_native(model: Any) -> bool:
    """Whether ``model`` is :class:`whisperctl.native.NativeWhisper` (by its type, not by what it lacks)."""
    from .native import NativeWhisper

    return isinstance(model, NativeWhisper)


def lean_attention(attention: str) -> str:
    """The lean loop's own attention for a model loaded with ``attention`` (transformers' name): eager stays eager;
    SDPA (its pinned backend applies through :meth:`LoadedModel.attention_context`), FlashAttention-2 and flex run the
    decoder's small attentions in SDPA, while the encoder keeps what it was loaded with."""
    return "eager" if attention == "eager" else "sdpa"


def lean_loop_for(model: Any, decoder: Decoder, plan: Plan) -> leanloop.LeanDecoder | None:
    """The lean loop ``decoder`` asks for: ``auto`` on the CPU where the model's attention is eager or SDPA (where
    the loop was measured to win), ``lean`` on any device; None for ``generate`` or a model the loop cannot run."""
    attention = plan.attention.hf_name
    if decoder == Decoder.LEAN:
        if not leanloop.supported(model, lean_attention(attention)):
            raise ModelError(f"--decoder lean: whisperctl's decoding loop cannot run this model ({type(model).__name__}: "
                             "not Whisper's decoder layout). Use --decoder generate.")
        return leanloop.LeanDecoder(model, lean_attention(attention))
    if decoder == Decoder.AUTO and plan.device == "cpu" and leanloop.supported(model, attention):
        return leanloop.LeanDecoder(model, attention)
    return None


def load(config: EngineConfig, plan: Plan, source: models.ModelSource) -> LoadedModel:
    """Load the model the plan asks for and derive everything decoding needs from it."""
    from .loading import load_model

    t0 = time.perf_counter()
    model, tokenizer, feature_extractor = load_model(config, plan, source)
    gen = model.generation_config
    vocab = tokenizer.get_vocab()
    multilingual = bool(getattr(gen, "is_multilingual", False))
    if source.english_only is None and not multilingual:
        source = dataclasses.replace(source, english_only=True)
    lean = lean_loop_for(model, config.decoder, plan)
    loaded = LoadedModel(
        model=model,
        tokenizer=tokenizer,
        feature_extractor=feature_extractor,
        plan=plan,
        source=source,
        eos_id=int(tokenizer.eos_token_id),
        sot_id=int(gen.decoder_start_token_id),
        sot_prev_id=vocab.get("<|startofprev|>"),
        no_timestamps_id=int(gen.no_timestamps_token_id),
        timestamp_begin=int(gen.no_timestamps_token_id) + 1,
        no_speech_id=vocab.get("<|nospeech|>", vocab.get("<|nocaptions|>")),
        multilingual=multilingual,
        max_length=int(gen.max_length or model.config.max_target_positions),
        lean_loop=lean,
        random_weights=config.weights == "random",
        load_seconds=time.perf_counter() - t0,
        config=config,
    )
    log.debug("loaded %s in %.2fs (%s attention, %s, quantization %s, on %s)", source.describe(), loaded.load_seconds,
              plan.attention.value, plan.dtype.value, plan.quantization.value, plan.device)
    return loaded
