"""The :class:`Transcriber` façade: validate and plan, load once, transcribe many times.

    >>> from whisperctl import EngineConfig, Transcriber
    >>> t = Transcriber(EngineConfig(attention="sdpa"))   # options validated and planned, nothing loaded yet
    >>> result = t.transcribe("speech.wav")               # loads on first use
    >>> result = t.transcribe("other.wav", t.options.replace(beam_size=5))   # per-call decoding options
    >>> for segment in t.stream("long.flac"): print(segment.text)        # segments as they settle
    >>> t.transcribe("x.wav", control=RunControl(halve_on_oom=False))   # how the call is driven (benchmarks)

Load-time options (model, device, dtype, quantization, attention, threads, weights, decoder) are fixed by the
:class:`EngineConfig`; the per-call :class:`DecodeOptions` and :class:`RunControl` default from it. The data's path lives in modules:
``loaded`` (the model and what derives from it) → ``audio`` → ``scheduler`` (batched windows) or ``sequential``
(seeking) → ``decoding`` (the decoding policy) → ``longform`` (merging) → ``transcript`` (segments) → ``writers``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np

from . import audio as audio_mod, models
from .config import (MAX_CHUNK_SECONDS, SHORT_CHUNK_SECONDS, Chunking, DecodeOptions, EngineConfig, RunControl, Task,
                     Timestamps, Vad, Weights)
from .inputs import AudioInput
from .version import __version__
from .decoding import BatchObserver, WindowDecoder
from .eligibility import Environment, Plan, make_plan, memory_problem, probe
from .errors import UsageError, WhisperctlError
from .loaded import LoadedModel
from .results import Segment, Transcript

if TYPE_CHECKING:
    from .regions import SpeechStream
from .transcript import Event, FileDone, Resume, SegmentReady, TranscriptBuilder

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, float], None]  # (input name, seconds of audio just finished)


class Transcriber:
    """Validates the config and plans the run on construction; loads the model on first use."""

    def __init__(self, config: EngineConfig | None = None, env: Environment | None = None):
        self.config = config or EngineConfig()
        self.options: DecodeOptions = self.config.decode_options()  # the per-call defaults
        self.source = models.resolve(self.config.model)
        if self.config.weights == Weights.RANDOM and models.architecture(self.config.model) is None:
            raise UsageError(
                f"--weights random: no architecture on record for '{self.config.model}'. Use an alias: "
                f"{', '.join(models.ARCHITECTURES)}."
            )
        self.env = env or probe()
        self.plan: Plan = make_plan(self.config, self.env)
        # A CPU run's "auto → sdpa" is expected and stays at debug (-v); a GPU that fell back is worth a line.
        log.log(logging.INFO if self.plan.auto_fell_back else logging.DEBUG, "%s", self.plan.attention_reason)
        self._loaded: LoadedModel | None = None
        self.check(self.options)

    def check(self, options: DecodeOptions) -> None:
        """Refuse per-call options this model cannot honour here (language, memory), before any decoding."""
        _check_language(self.source, options)
        if options.vad_in_effect in (Vad.SILERO, Vad.SKIP):
            from . import vad

            if not vad.available():
                flag = f"--vad {options.vad.value}" if options.vad is not None else f"--chunking {options.chunking.value} (VAD by default)"
                raise UsageError(f"{flag}: silero-vad is not installed. {vad.INSTALL_HINT}")
        problem = memory_problem(models.dimensions(self.source), self.plan, options.batch_size, options.beam_size, self.env)
        if problem:
            raise UsageError(problem)

    @property
    def loaded(self) -> LoadedModel:
        """The loaded model (loads it on first use)."""
        return self.load()._loaded  # type: ignore[return-value]

    def load(self) -> "Transcriber":
        if self._loaded is None:
            from .loaded import load

            self._loaded = load(self.config, self.plan, self.source)
            self.source = self._loaded.source
            self.check(self.options)
        return self

    def runtime_info(self, options: DecodeOptions | None = None) -> dict[str, Any]:
        import torch

        plan, opts = self.plan, options or self.options
        lm = self._loaded
        return {
            "model": self.source.describe(),
            "device": plan.device,
            "dtype": plan.dtype.value,
            "attention": lm.attention_in_effect() if lm else plan.attention.hf_name,
            "attention_reason": plan.attention_reason,
            "word_alignment_attention": "eager" if opts.timestamps == Timestamps.WORD else None,
            "quantization": plan.quantization.value,
            # what ran every decoding pass (greedy, beam, sampled fallback): "lean" (whisperctl's loop) or "generate"
            "decoder": lm.backend.name if lm else None,
            "threads": torch.get_num_threads() if plan.device == "cpu" else None,
            "load_seconds": lm.load_seconds if lm else None,
            "versions": {"whisperctl": __version__, "torch": self.env.torch, "transformers": self.env.transformers},
        }

    # ------------------------------------------------------------ transcribe
    def transcribe(self, source: Any, options: DecodeOptions | None = None, name: str | None = None, *,
                   control: RunControl | None = None) -> Transcript:
        """Transcribe one input: a path, ``-``, an AudioInput, or a 16 kHz mono float32 array."""
        if isinstance(source, np.ndarray):
            source = (name or "<array>", source)
        for event in self.events([source], options, control=control):
            if isinstance(event, FileDone):
                if isinstance(event.result, Exception):
                    raise event.result
                return event.result
        raise AssertionError("unreachable: every input ends with FileDone")

    def transcribe_many(
        self, sources: Iterable[Any], options: DecodeOptions | None = None, progress: ProgressFn | None = None,
        on_batch: BatchObserver | None = None, *, control: RunControl | None = None,
    ) -> Iterator[tuple[AudioInput, Transcript | WhisperctlError]]:
        """Yield (input, transcript or error) in input order; one bad input never stops the others.
        ``sources``: paths, AudioInputs, or (name, 16 kHz mono float32 array) pairs."""
        for event in self.events(sources, options, progress, on_batch, control=control):
            if isinstance(event, FileDone):
                yield event.source, event.result

    def stream(self, source: Any, options: DecodeOptions | None = None, *,
               control: RunControl | None = None) -> Iterator[Segment]:
        """Yield the segments of one input as soon as they can no longer change; raises the input's error."""
        for event in self.events([source], options, control=control):
            if isinstance(event, SegmentReady):
                yield event.segment
            elif isinstance(event, FileDone) and isinstance(event.result, Exception):
                raise event.result

    def events(
        self, sources: Iterable[Any], options: DecodeOptions | None = None, progress: ProgressFn | None = None,
        on_batch: BatchObserver | None = None, *, control: RunControl | None = None,
        resume: Callable[[AudioInput], Resume | None] | None = None, checkpoints: bool = False,
        prompts: Callable[[AudioInput], str | None] | None = None, call: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> Iterator[Event]:
        """Every input's settled segments (SegmentReady) then its result (FileDone), input after input.
        ``options``: what to decode; ``control``: how the run is driven (forced token counts, out-of-memory
        halving). Both default to the config's. Windows cut at ``--max-new-tokens`` are said in one warning when
        the call ends, or, to an ``on_batch`` observer, counted in each batch's :class:`BatchStats`.

        Sequential chunking only (the others start over): with ``checkpoints``, a :class:`Checkpoint` follows
        each window's segments (where decoding could go on from: what a journal records); ``resume(input)`` may
        give an interrupted run's :class:`Resume` for an input, whose segments then come first in its transcript
        and whose decoding goes on from its point (the same windows and prompts as without the interruption).

        ``sources`` may be a live :class:`~whisperctl.runners.Intake` (the server): inputs put into it while the
        call runs join the running batch, their events come as they settle, and the call ends when it is closed
        and done. ``prompts(input)``: that input's initial prompt instead of the options' (None: the options');
        ``call(work)``: runs each batch's decode (``work()``) and returns its result, e.g. on the thread that owns
        the model (the server's calls share it); default: here."""
        opts, control = options or self.options, control or self.config.control
        self.check(opts)
        _note_chunk_length(opts)
        lm = self.loaded
        from .runners import Intake, RunContext, runner_for

        def prepare(item: Any) -> tuple[AudioInput, SpeechStream]:
            inp, array = item if isinstance(item, tuple) and isinstance(item[0], AudioInput) else _as_input(item)
            return inp, _speech(_blocks(inp, array), opts, inp.name, call)

        intake = sources if isinstance(sources, Intake) else Intake([_as_input(s) for s in sources])
        intake.prepared(prepare)
        decoder = WindowDecoder(lm, opts, on_batch, control=control)
        config = {**self.config.to_dict(), **opts.to_dict(), **control.to_dict()}
        runtime = self.runtime_info(opts)

        def new_builder(inp: AudioInput, stream: SpeechStream) -> TranscriptBuilder:
            return TranscriptBuilder(inp, lm.decode, lm.is_word_start, with_words=opts.timestamps == Timestamps.WORD,
                                     speech=stream, silence_threshold=opts.hallucination_silence_threshold)

        def finish(builder: TranscriptBuilder, duration: float) -> Transcript:
            return builder.finish(duration, config, runtime)

        def prompt_for(inp: AudioInput) -> list[int] | None:
            text = prompts(inp) if prompts is not None else None
            return None if text is None else (lm.text_tokens(text) if text else [])

        context = RunContext(decoder, opts, new_builder, finish, progress, prompt_for if prompts is not None else None)
        if call is not None:
            context = dataclasses.replace(context, call=call)
        runner = runner_for(context, resume, checkpoints)
        try:
            yield from runner.run(intake)
        finally:  # also when the caller stops early (transcribe() returns at its input's result)
            note = decoder.cut_note() if on_batch is None else None
            if note:
                log.warning("%s", note)


def _note_chunk_length(opts: DecodeOptions) -> None:
    """Say once per call when ``--chunk-length`` (a flag or a preset's ``chunk_length_s``) does not do what it
    seems: sequential chunking ignores it, and very short batched windows lose accuracy."""
    if opts.chunking == Chunking.SEQUENTIAL:
        if opts.chunk_length_s != MAX_CHUNK_SECONDS:
            log.warning("--chunk-length %g s is not used: sequential chunking (the default) always decodes %g s "
                        "windows; --chunk-length applies to --chunking batched|vad.", opts.chunk_length_s,
                        MAX_CHUNK_SECONDS)
    elif opts.chunk_length_s < SHORT_CHUNK_SECONDS:
        log.warning("--chunk-length %g s: windows this short cut words at every seam and lose their context; accuracy "
                    "drops steeply below %g s (Whisper is trained on 30 s windows; 15-30 s is usual).",
                    opts.chunk_length_s, SHORT_CHUNK_SECONDS)


def _speech(blocks: Iterable[np.ndarray], opts: DecodeOptions, name: str = "<audio>",
            call: Callable[[Callable[[], Any]], Any] | None = None) -> SpeechStream:
    """The input's blocks as the runner reads them: all of them; or only the clips' audio with its time map
    (``--clip-timestamps``); or the VAD's view of them: windows cut at pauses (``--chunking vad``), or the
    speech-only audio with its time map."""
    from . import regions

    if opts.clip_timestamps is not None:
        return regions.clips_only(blocks, opts.clips, name)
    if opts.vad_in_effect == Vad.NONE:
        return regions.WholeStream(blocks)
    from . import vad

    params = vad.params_for(opts.vad_in_effect.value, *opts.vad_params)
    if opts.chunking == Chunking.VAD:
        return vad.SpeechWindows(blocks, opts.chunk_length_s, params, call)
    return vad.speech_only(blocks, params, call=call)


def _as_input(source: Any) -> tuple[AudioInput, np.ndarray | None]:
    """(input, its array or None): arrays travel with their input, so two arrays of one name stay apart."""
    if isinstance(source, tuple) and isinstance(source[0], AudioInput):
        return source
    if isinstance(source, tuple):
        name, array = source
        return AudioInput(str(name), None), array
    if isinstance(source, np.ndarray):
        return AudioInput("<array>", None), source
    return (source if isinstance(source, AudioInput) else AudioInput.from_arg(source)), None


def _blocks(inp: AudioInput, array: np.ndarray | None) -> Iterator[np.ndarray]:
    if array is None:
        yield from audio_mod.stream(inp)
        return
    data = np.asarray(array)
    if data.ndim != 1:
        raise UsageError(f"{inp.name}: expected a 1-D 16 kHz mono array, got shape {data.shape}.")
    if not np.issubdtype(data.dtype, np.floating):
        raise UsageError(f"{inp.name}: expected float samples in [-1, 1], got {data.dtype}. Convert integer PCM "
                         "with samples / 32768.0 (int16) first.")
    data = data.astype(np.float32, copy=False)
    if not np.isfinite(data).all():
        raise UsageError(f"{inp.name}: the array contains NaN or infinite samples.")
    scale = audio_mod.full_scale_factor(float(np.abs(data).max()) if data.size else 0.0, inp.name)
    data = data if scale == 1.0 else data * np.float32(scale)
    # in 30 s blocks, as a file streams: the VAD and the region tape then hold one block, not the whole array
    # (a 20-min array passed whole peaked 1.1 GB)
    block = 30 * audio_mod.SAMPLE_RATE
    for i in range(0, max(len(data), 1), block):
        yield data[i : i + block]


def _check_language(source: models.ModelSource, opts: DecodeOptions) -> None:
    if source.english_only:
        if opts.task == Task.TRANSLATE:
            raise UsageError(
                f"--task translate: model '{source.describe()}' is English-only and cannot translate. "
                "Use a multilingual model such as 'small' or 'large-v3'."
            )
        if opts.language not in (None, "en", "english"):
            raise UsageError(
                f"--language {opts.language}: model '{source.describe()}' is English-only. Drop --language or use a "
                "multilingual model such as 'small' or 'large-v3'."
            )
    if opts.language is not None:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        if opts.language not in LANGUAGES and opts.language not in TO_LANGUAGE_CODE:
            raise UsageError(
                f"--language {opts.language}: not a Whisper language. Use a code such as en, de, fr, ja, or a name "
                "such as german."
            )


@functools.lru_cache(maxsize=1)
def _cached(config: EngineConfig) -> Transcriber:
    return Transcriber(config)


def transcribe(source: Any, config: EngineConfig | None = None, **options: Any) -> Transcript:
    """One-call convenience: ``transcribe("a.wav", attention="sdpa")``.

    The loaded model is kept for the next call with the same load-time options (model, device, dtype,
    quantization, attention, threads, weights, decoder), so repeated calls do not reload it; per-call
    options (beam size, language …) may change freely between calls.
    """
    cfg = EngineConfig.from_mapping(options, base=config or EngineConfig()) if options else (config or EngineConfig())
    return _cached(EngineConfig(load=cfg.load)).transcribe(source, cfg.decode_options(), control=cfg.control)
