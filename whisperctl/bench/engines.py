"""The engines ``whisperctl bench --engines`` compares, behind one small protocol.

An :class:`Engine` is registered by name with :func:`register`; each runs in its own child process
(:mod:`whisperctl.bench.child`), which calls ``engine.imports()`` (timed apart), ``engine.load(request)`` once and
then ``session.transcribe(samples)`` per input. Every engine gets the same :class:`EngineRequest`: model,
device, threads, dtype, beam size, language; what it actually ran (compute type, attention, batch, chunking, VAD)
comes back in ``session.ran`` and is printed in its row.

More engines (a test's fake one, a plugin) are registered by modules named in the environment variable
``WHISPERCTL_BENCH_ENGINES`` (comma-separated, importable), which parent and child both import.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import importlib.metadata
import os
from typing import Any, Callable, Iterable, Iterator, Protocol

import numpy as np

from ..errors import UsageError

SAMPLE_RATE = 16_000
#: Modules that register more engines, imported by :func:`registry` in the parent and in each child.
PLUGINS_ENV = "WHISPERCTL_BENCH_ENGINES"


@dataclasses.dataclass(frozen=True)
class EngineRequest:
    """What every engine of one comparison is asked to run (JSON-ready: it travels to the child processes)."""

    model: str  # whisperctl's --model name; each engine loads its own format of these weights
    device: str  # resolved: cpu, cuda, cuda:N
    threads: int  # CPU threads for torch, CTranslate2 and OpenMP
    dtype: str  # resolved: fp32, fp16, bf16
    quantization: str  # whisperctl's resolved choice here (int8 on the CPU by default): CTranslate2's compute type
    attention: str  # resolved attention (whisperctl and transformers); the others name their own
    beam_size: int = 1
    language: str | None = None  # None: detect (English for .en models)
    batch_size: int | None = None  # None: each engine's own default (whisperctl 8, pipeline 24, batched fw 8)
    vad: str | None = None  # None: each engine's own default; "none" / "silero": every engine that has a VAD
    whisperctl_config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the EngineConfig fields given

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


class Session(Protocol):
    """A loaded engine: ``ran`` says what it runs; ``transcribe`` returns one input's text, every segment decoded.

    An engine that runs many inputs in one call, as its users run a folder, also has ``transcribe_all(inputs)``: the
    texts of an iterable of inputs, in order; the child then times that one call and marks the row's ``ran`` with
    ``"inputs": "together"`` (the others are called once per input). whisperctl's reads every input's array before
    the first window (they count in its memory: 21 MB for the 327 s folder)."""

    ran: dict[str, Any]

    def transcribe(self, samples: np.ndarray) -> str: ...


@dataclasses.dataclass(frozen=True)
class Engine:
    name: str
    summary: str  # what it runs, one line (docs, --help)
    imports: Callable[[], None]  # the heavy imports, timed apart from the load
    load: Callable[[EngineRequest], Session]
    distributions: tuple[str, ...] = ()  # installed distributions it needs
    install: str = ""  # the command that installs them
    supports: Callable[[str], str | None] = lambda model: None  # why it cannot load --model, or None

    def missing(self) -> str | None:
        """Why this engine cannot run here (a distribution not installed), with the fix; None when it can."""
        for dist in self.distributions:
            try:
                importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                return f"{dist} is not installed; {self.install}"
        return None

    def version(self) -> str | None:
        for dist in self.distributions or ("whisperctl",):
            try:
                return importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                return None
        return None


_REGISTRY: dict[str, Engine] = {}


def register(engine: Engine) -> Engine:
    _REGISTRY[engine.name] = engine
    return engine


def registry() -> dict[str, Engine]:
    """Every registered engine, the built-in ones first, then those of :data:`PLUGINS_ENV`'s modules."""
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError(f"{PLUGINS_ENV}: cannot import engine module '{module}': {exc}.") from None
    return dict(_REGISTRY)


def parse_engines(text: str) -> tuple[list[str], dict[str, str]]:
    """``--engines`` -> (names to run, {name: skip reason}). Unknown names are a usage error with a suggestion.

    A named engine whose package is missing is a usage error (the comparison asked for cannot happen: nothing
    runs); ``all`` runs every registered engine that can run here and lists the others as skipped rows."""
    engines = registry()
    items = list(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
    if not items:
        raise UsageError(f"--engines: empty. Valid: all, {', '.join(engines)}.")
    if items == ["all"]:
        skipped = {n: why for n, e in engines.items() if (why := e.missing())}
        return [n for n in engines if n not in skipped], skipped
    for name in items:
        if name not in engines:
            close = difflib.get_close_matches(name, list(engines) + ["all"], n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise UsageError(f"--engines: unknown engine '{name}'. Valid: all, {', '.join(engines)}.{hint}")
        why = engines[name].missing()
        if why:
            raise UsageError(f"--engines {name}: {why}.")
    return items, {}


def check_model(names: list[str], model: str) -> None:
    """Every engine can load ``model`` (a usage error before anything runs otherwise)."""
    engines = registry()
    for name in names:
        why = engines[name].supports(model)
        if why:
            raise UsageError(f"--engines {name}: {why}")


# --------------------------------------------------------------------------------------------- whisperctl
def _whisperctl_imports() -> None:
    # what its CPU load path needs (torch, its own modules, tokenizers); transformers' model code is imported by
    # the load where it is used (GPU, --decoder generate), so it counts there
    import safetensors.torch  # noqa: F401
    import tokenizers  # noqa: F401
    import torch  # noqa: F401

    from .. import decoding, engine, loaded, native  # noqa: F401


class _WhisperctlSession:
    def __init__(self, request: EngineRequest):
        from ..config import EngineConfig
        from ..engine import Transcriber

        config = EngineConfig.from_mapping({**request.whisperctl_config, "device": request.device, "threads": request.threads})
        self.transcriber = Transcriber(config).load()
        options = self.transcriber.options
        info = self.transcriber.runtime_info()
        self.ran = {
            "compute": f"{info['dtype']} {info['quantization']}" if info["quantization"] != "none" else info["dtype"],
            "attention": info["attention"], "batch": options.batch_size, "beam": options.beam_size,
            "chunking": f"{options.chunking.value} {options.chunk_length_s:g} s",
            "vad": options.vad_in_effect.value, "decoder": info["decoder"], "fallback": len(options.temperature) > 1,
            "config": config.to_dict(),
        }

    def transcribe(self, samples: np.ndarray) -> str:
        return self.transcriber.transcribe(samples, name="bench").text

    def transcribe_all(self, inputs: Iterable[np.ndarray]) -> Iterator[str]:
        """Every input in one run, as ``whisperctl transcribe a.wav b.wav …`` runs a folder: windows of different
        inputs share the decoder's batches."""
        pairs = ((f"input-{i}", samples) for i, samples in enumerate(inputs))
        for _, result in self.transcriber.transcribe_many(pairs):
            if isinstance(result, Exception):
                raise result
            yield result.text


register(Engine(
    name="whisperctl", summary="whisperctl's Transcriber with transcribe's defaults (and the engine flags given)",
    imports=_whisperctl_imports, load=_WhisperctlSession,
))


# ------------------------------------------------------------------------------------------- transformers
def _transformers_imports() -> None:
    import torch  # noqa: F401
    import transformers.pipelines  # noqa: F401
    from transformers import WhisperForConditionalGeneration  # noqa: F401


#: insanely-fast-whisper's defaults
PIPELINE_BATCH = 24
PIPELINE_CHUNK_S = 30


class _PipelineSession:
    """The transformers ASR pipeline as insanely-fast-whisper runs it."""

    def __init__(self, request: EngineRequest):
        import torch
        from transformers import pipeline

        from .. import models

        torch.set_num_threads(request.threads)
        source = models.resolve(request.model)
        dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[request.dtype]
        attention = request.attention.split(":", 1)[0]  # sdpa:<backend> pins a kernel in whisperctl only
        self.pipe = pipeline("automatic-speech-recognition", model=models.checkpoint(source), dtype=dtype,
                             device=request.device, model_kwargs={"attn_implementation": attention})
        if self.pipe.tokenizer.pad_token_id is None:  # batching needs one; Whisper pads with <|endoftext|>
            self.pipe.tokenizer.pad_token_id = self.pipe.model.config.eos_token_id
        self.batch = request.batch_size or PIPELINE_BATCH
        self.generate_kwargs: dict[str, Any] = {"num_beams": request.beam_size}
        if request.language and self.pipe.model.config.vocab_size >= 51865:  # English-only models refuse a language
            self.generate_kwargs.update(language=request.language, task="transcribe")
        self.ran = {
            "compute": request.dtype, "attention": self.pipe.model.config._attn_implementation, "batch": self.batch,
            "beam": request.beam_size, "chunking": f"pipeline chunk_length_s={PIPELINE_CHUNK_S}", "vad": "none",
            "decoder": "generate", "fallback": False,
        }

    def transcribe(self, samples: np.ndarray) -> str:
        out = self.pipe({"raw": samples, "sampling_rate": SAMPLE_RATE}, chunk_length_s=PIPELINE_CHUNK_S,
                        batch_size=self.batch, return_timestamps=True, generate_kwargs=dict(self.generate_kwargs))
        return out["text"]


register(Engine(
    name="transformers",
    summary="transformers' ASR pipeline as insanely-fast-whisper runs it: chunk_length_s=30, batch 24, fp16 on CUDA",
    imports=_transformers_imports, load=_PipelineSession, distributions=("transformers",),
    install="pip install transformers",
))


# ----------------------------------------------------------------------------------------- faster-whisper
def ct2_directory(model: str):
    """The CTranslate2 directory whisperctl's ``model`` is converted from (faster-whisper loads the same one)."""
    from .. import models

    source = models.resolve(model)
    return models.ct2_source(source)[0] if models.is_converted(source) else None


def _ct2_supports(model: str) -> str | None:
    from .. import models

    if models.is_converted(models.resolve(model)):
        return None
    return (f"needs a CTranslate2 model and --model {model} is a transformers one. Fix: --model tiny.en, base-pypi "
            "or a faster-whisper (CTranslate2) directory.")


def _faster_whisper_imports() -> None:
    import faster_whisper  # noqa: F401


def compute_type(request: EngineRequest) -> str:
    """CTranslate2's compute type for the request: int8 on the CPU (whisperctl's int8 default), fp16 on CUDA."""
    floats = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
    if request.quantization == "int8":
        return "int8" if not request.cuda else f"int8_{floats[request.dtype]}"
    return floats[request.dtype]


class _FasterWhisperSession:
    def __init__(self, request: EngineRequest, batched: bool):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        device, _, index = request.device.partition(":")
        self.compute = compute_type(request)
        self.model = WhisperModel(str(ct2_directory(request.model)), device=device, device_index=int(index or 0),
                                  compute_type=self.compute, cpu_threads=request.threads, num_workers=1)
        self.batched = BatchedInferencePipeline(self.model) if batched else None
        self.request = request
        # the sequential transcribe has no VAD unless asked; the batched pipeline needs one (or fixed clips)
        self.vad = request.vad == "silero" if not batched else request.vad != "none"
        self.batch = (request.batch_size or 8) if batched else 1
        self.ran = {
            "compute": self.compute, "attention": "ctranslate2", "batch": self.batch, "beam": request.beam_size,
            "chunking": "batched 30 s" if batched else "sequential (seek)", "vad": "silero" if self.vad else "none",
            "decoder": "ctranslate2", "fallback": True,
        }

    def transcribe(self, samples: np.ndarray) -> str:
        kwargs: dict[str, Any] = {"beam_size": self.request.beam_size, "language": self.request.language,
                                  "vad_filter": self.vad}
        if self.batched is None:
            segments, _ = self.model.transcribe(samples, **kwargs)
        else:
            if not self.vad:  # fixed 30 s windows: the batched pipeline refuses long audio with neither
                total = len(samples) / SAMPLE_RATE
                kwargs["clip_timestamps"] = [{"start": s, "end": min(s + 30.0, total)} for s in np.arange(0.0, total, 30.0)]
            segments, _ = self.batched.transcribe(samples, batch_size=self.batch, **kwargs)
        return "".join(s.text for s in segments)  # a generator: the decoding happens here


_PEERS = "pip install 'whisperctl[peers]'"
register(Engine(
    name="faster-whisper",
    summary="faster-whisper's WhisperModel.transcribe (sequential, int8 on CPU / fp16 on CUDA), same CTranslate2 weights",
    imports=_faster_whisper_imports, load=lambda r: _FasterWhisperSession(r, batched=False),
    distributions=("faster-whisper",), install=_PEERS, supports=_ct2_supports,
))
register(Engine(
    name="faster-whisper:batched",
    summary="faster-whisper's BatchedInferencePipeline (batch 8, its VAD unless --vad none), same CTranslate2 weights",
    imports=_faster_whisper_imports, load=lambda r: _FasterWhisperSession(r, batched=True),
    distributions=("faster-whisper",), install=_PEERS, supports=_ct2_supports,
))


# ----------------------------------------------------------------------------------------- openai-whisper
def _openai_imports() -> None:
    import torch  # noqa: F401
    import whisper  # noqa: F401


def local_checkpoint_supports(model: str) -> str | None:
    """Why an engine that runs on a local checkpoint written once in its own format (openai-whisper's .pt,
    whisper.cpp's ggml) cannot load ``model`` (a hub model), or None."""
    from .. import models

    source = models.resolve(model)
    if models.is_converted(source) or source.kind == "local":
        return None
    return (f"runs on a local checkpoint written in its format, and --model {model} is a hub model. "
            "Fix: --model tiny.en or a local transformers directory.")


class _OpenAISession:
    def __init__(self, request: EngineRequest):
        import torch
        import whisper

        from .. import models
        from ..openai_format import openai_checkpoint

        torch.set_num_threads(request.threads)
        path = openai_checkpoint(models.checkpoint(models.resolve(request.model)))
        self.model = whisper.load_model(str(path), device=request.device)
        self.fp16 = request.cuda and request.dtype == "fp16"  # it knows fp16 and fp32 only
        self.request = request
        self.ran = {
            "compute": "fp16" if self.fp16 else "fp32", "attention": "sdpa", "batch": 1, "beam": request.beam_size,
            "chunking": "sequential (seek)", "vad": "none", "decoder": "openai-whisper", "fallback": True,
        }

    def transcribe(self, samples: np.ndarray) -> str:
        import whisper

        beam = self.request.beam_size if self.request.beam_size > 1 else None
        # best_of 5: its CLI's default, faster-whisper's and whisperctl's (its Python API draws once per fallback pass)
        out = whisper.transcribe(self.model, samples, fp16=self.fp16, language=self.request.language, beam_size=beam,
                                 best_of=5, verbose=None)
        return out["text"]


register(Engine(
    name="openai-whisper",
    summary="openai-whisper's transcribe (the reference), on the same weights written once in its .pt format",
    imports=_openai_imports, load=_OpenAISession, distributions=("openai-whisper",),
    install="pip install 'whisperctl[openai]'", supports=local_checkpoint_supports,
))

# ------------------------------------------------------------------------------------------- whisper.cpp
from . import whispercpp as _whispercpp  # noqa: E402,F401  (registers itself; its module needs the names above)
