"""The transcription engine: one loaded model, configured by one :class:`EngineConfig`.

    >>> from whisperctl import EngineConfig, Transcriber
    >>> t = Transcriber(EngineConfig(attention="sdpa"))   # options validated here, nothing loaded yet
    >>> result = t.transcribe("speech.wav")               # loads on first use
    >>> result.text, result.runtime["attention"]

``Transcriber.transcribe_many`` batches windows across chunks *and* files (``batch_size`` windows per
forward pass) and streams each file, so memory does not grow with audio length.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from . import __version__, audio as audio_mod, greedy, longform, models
from .config import Chunking, Decoder, EngineConfig, Task, Timestamps
from .eligibility import Environment, Plan, make_plan, probe
from .errors import ModelError, OutOfMemoryError, UsageError, WhisperctlError
from .loading import TORCH_DTYPES
from .results import Transcript

log = logging.getLogger(__name__)

# openai-whisper's fallback thresholds (compression ratio on tokens as transformers computes it).
_FALLBACK = {"compression_ratio_threshold": 1.35, "logprob_threshold": -1.0, "no_speech_threshold": 0.6}
NO_SPEECH_THRESHOLD = 0.6  # openai-whisper's defaults for skipping silent windows
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4  # openai-whisper's gzip ratio of the text above which a decode is a loop

ProgressFn = Callable[[str, float], None]  # (input name, seconds of audio just finished)


@dataclasses.dataclass
class _FileState:
    source: audio_mod.AudioInput
    windows: dict[float, tuple[float, float]] = dataclasses.field(default_factory=dict)  # index -> (start, dur)
    tokens: dict[float, list[longform.TimedToken]] = dataclasses.field(default_factory=dict)
    kept: dict[int, longform.Window] = dataclasses.field(default_factory=dict)  # decoded, successor not yet checked
    last_index: int | None = None
    pending: int = 0
    exhausted: bool = False
    language: str | None = None
    error: WhisperctlError | None = None
    started: float = dataclasses.field(default_factory=time.perf_counter)
    decode_s: float = 0.0
    align_s: float = 0.0


class Transcriber:
    """Validates the config and plans the run on construction; loads the model on first use."""

    def __init__(self, config: EngineConfig | None = None, env: Environment | None = None):
        self.config = config or EngineConfig()
        self.source = models.resolve(self.config.model)
        self._check_language_options()
        self.env = env or probe()
        self.plan: Plan = make_plan(self.config, self.env)
        self.model: Any = None
        self.load_seconds: float | None = None
        self.retry_oom = True  # halve the batch on CUDA OOM (bench turns this off to report OOM rows)
        self.batch_observer: Callable[[dict[str, Any]], None] | None = None  # per-batch timings (bench)
        self._batch_limit: int | None = None
        self._encoder_s = 0.0
        self.greedy: greedy.GreedyDecoder | None = None  # set at load where the lean loop applies
        if self.config.weights == "random" and models.architecture(self.config.model) is None:
            raise UsageError(
                f"--weights random: no architecture on record for '{self.config.model}'. Use an alias: "
                f"{', '.join(models.ARCHITECTURES)}."
            )

    # ------------------------------------------------------------------ setup
    def _check_language_options(self) -> None:
        cfg = self.config
        if self.source.english_only:
            if cfg.task == Task.TRANSLATE:
                raise UsageError(
                    f"--task translate: model '{cfg.model}' is English-only and cannot translate. "
                    "Use a multilingual model such as 'small' or 'large-v3'."
                )
            if cfg.language not in (None, "en", "english"):
                raise UsageError(
                    f"--language {cfg.language}: model '{cfg.model}' is English-only. Drop --language or use a "
                    "multilingual model such as 'small' or 'large-v3'."
                )
        if cfg.language is not None:
            from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

            if cfg.language not in LANGUAGES and cfg.language not in TO_LANGUAGE_CODE:
                raise UsageError(
                    f"--language {cfg.language}: not a Whisper language. Use a code such as en, de, fr, ja, or a name "
                    "such as german."
                )

    def load(self) -> "Transcriber":
        if self.model is not None:
            return self
        from .loading import load_model

        t0 = time.perf_counter()
        self.model, self.tokenizer, self.feature_extractor = load_model(self.config, self.plan, self.source)
        gen = self.model.generation_config
        self.eos_id = int(self.tokenizer.eos_token_id)
        self.timestamp_begin = int(gen.no_timestamps_token_id) + 1
        self.multilingual = bool(getattr(gen, "is_multilingual", False))
        vocab = self.tokenizer.get_vocab()
        self.no_speech_id = vocab.get("<|nospeech|>", vocab.get("<|nocaptions|>"))
        self.unique_call = _supports_unique_call(self.model)
        attention = self.plan.attention.hf_name
        self.greedy = (
            greedy.GreedyDecoder(self.model, attention)
            if self.config.decoder == Decoder.AUTO and self.config.beam_size == 1 and self.plan.device == "cpu"
            and greedy.supported(self.model, attention)
            else None
        )
        if self.source.english_only is None and not self.multilingual:
            self.source = dataclasses.replace(self.source, english_only=True)
            self._check_language_options()
        self._token_text: dict[int, str] = {}
        self.load_seconds = time.perf_counter() - t0
        log.info("loaded %s in %.2fs (%s)", self.source.describe(), self.load_seconds, self.plan.attention_reason)
        return self

    # --------------------------------------------------------------- helpers
    def runtime_info(self) -> dict[str, Any]:
        import torch

        plan = self.plan
        return {
            "model": self.source.describe(),
            "device": plan.device,
            "dtype": plan.dtype.value,
            "attention": self._attention_in_effect(),
            "attention_reason": plan.attention_reason,
            "word_alignment_attention": "eager" if self.config.timestamps == Timestamps.WORD else None,
            "quantization": plan.quantization.value,
            # greedy windows: whisperctl's lean loop or transformers' generate() (beam search and sampled
            # fallback always use generate())
            "decoder": "whisperctl" if self.greedy is not None else "generate",
            "threads": torch.get_num_threads() if plan.device == "cpu" else None,
            "load_seconds": self.load_seconds,
            "versions": {"whisperctl": __version__, "torch": self.env.torch, "transformers": self.env.transformers},
        }

    def _attention_in_effect(self) -> str:
        """What the loaded model really runs (read back from transformers), with the pinned SDPA backend."""
        actual = getattr(getattr(self.model, "config", None), "_attn_implementation", None) or self.plan.attention.hf_name
        backend = self.plan.attention.sdpa_backend
        return f"{actual}:{backend}" if backend and actual == "sdpa" else actual

    def _token_str(self, tok: int) -> str:
        text = self._token_text.get(tok)
        if text is None:
            text = self.tokenizer.convert_ids_to_tokens(int(tok)) or ""
            self._token_text[tok] = text
        return text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _is_word_start(self, tok: int) -> bool:
        return self._token_str(tok).startswith("Ġ")

    @contextlib.contextmanager
    def _attention_context(self) -> Iterator[None]:
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

    def _features(self, chunks: list[np.ndarray]):
        import torch

        # One window at a time: the log-mel features are per window anyway, and 8 windows at once build a 38 MB
        # complex STFT that is page-faulted afresh each time (measured: 8 windows 0.19-0.46 s together, 0.05 s
        # one by one, identical values).
        feats = torch.cat([
            self.feature_extractor([c], sampling_rate=audio_mod.SAMPLE_RATE, return_tensors="pt").input_features
            for c in chunks
        ])
        return feats.to(self.plan.device, dtype=getattr(torch, TORCH_DTYPES[self.plan.dtype]))

    def _generate_kwargs(self, want_timestamps: bool, temperature: float | tuple[float, ...] | None = None) -> dict[str, Any]:
        """Arguments for generate(). ``temperature``: one value (batched windows; the engine runs the fallback)
        or the config's tuple (sequential: transformers runs the fallback)."""
        cfg = self.config
        kw: dict[str, Any] = {"return_timestamps": want_timestamps, "num_beams": cfg.beam_size}
        if cfg.max_new_tokens:
            kw["max_new_tokens"] = cfg.max_new_tokens
        if cfg.decode_tokens:
            kw["max_new_tokens"] = kw["min_new_tokens"] = cfg.decode_tokens
        temps = cfg.temperature if temperature is None else temperature
        if isinstance(temps, tuple) and len(temps) > 1:
            kw.update(temperature=temps, do_sample=False, **_FALLBACK)
        else:
            t = temps[0] if isinstance(temps, tuple) else temps
            if t > 0:
                kw.update(temperature=t, do_sample=True, num_beams=1)
            else:
                kw["do_sample"] = False
        if self.multilingual:
            kw["task"] = cfg.task.value
        if cfg.initial_prompt:
            kw["prompt_ids"] = self.tokenizer.get_prompt_ids(cfg.initial_prompt, return_tensors="pt").to(self.plan.device)
        return kw

    def _detect_languages(self, features) -> list[str]:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

        if not self.multilingual:
            return ["en"] * len(features)
        if self.config.language:
            code = TO_LANGUAGE_CODE.get(self.config.language, self.config.language)
            return [code] * len(features)
        lang_ids = self.model.detect_language(input_features=features)
        out = []
        for tok in lang_ids.reshape(-1).tolist():
            code = self._token_str(int(tok)).strip("<|>")
            out.append(code if code in LANGUAGES else "en")
        return out

    def _align(self, samples: np.ndarray, tokens: list[int], language: str) -> list[tuple[float, float, float]]:
        """(start, end, probability) per token of ``tokens`` spoken in ``samples`` (≤ 30 s)."""
        from .alignment import token_timings

        return token_timings(
            self.model, self._features([samples]), self._prefix(language, timestamps=False), tokens, self.eos_id,
            len(samples) / audio_mod.SAMPLE_RATE, self.plan.attention.hf_name,
        )

    # ------------------------------------------------------------- batched
    def transcribe(self, source: str | audio_mod.AudioInput | np.ndarray, name: str | None = None) -> Transcript:
        """Transcribe one input (a path, ``-``, an AudioInput, or a 16 kHz mono float32 array)."""
        if isinstance(source, np.ndarray):
            inp = audio_mod.AudioInput(name or "<array>", None)
            results = list(self._run([inp], arrays={inp.name: source}))
        else:
            inp = source if isinstance(source, audio_mod.AudioInput) else audio_mod.AudioInput.from_arg(source)
            results = list(self._run([inp]))
        _, result = results[0]
        if isinstance(result, Exception):
            raise result
        return result

    def transcribe_many(
        self, sources: Iterable[str | audio_mod.AudioInput | tuple[str, np.ndarray]], progress: ProgressFn | None = None
    ) -> Iterator[tuple[audio_mod.AudioInput, Transcript | WhisperctlError]]:
        """Yield (input, transcript or error) in input order; one bad file never stops the others."""
        inputs: list[audio_mod.AudioInput] = []
        arrays: dict[str, np.ndarray] = {}
        for s in sources:
            if isinstance(s, tuple):  # (name, 16 kHz mono float32 array)
                inputs.append(audio_mod.AudioInput(s[0], None))
                arrays[s[0]] = s[1]
            else:
                inputs.append(s if isinstance(s, audio_mod.AudioInput) else audio_mod.AudioInput.from_arg(s))
        yield from self._run(inputs, arrays=arrays, progress=progress)

    def _blocks(self, inp: audio_mod.AudioInput, arrays: dict[str, np.ndarray] | None) -> Iterator[np.ndarray]:
        if arrays and inp.name in arrays:
            data = np.asarray(arrays[inp.name], dtype=np.float32)
            if data.ndim != 1:
                raise UsageError(f"{inp.name}: expected a 1-D 16 kHz mono array, got shape {data.shape}.")
            if not np.isfinite(data).all():
                raise UsageError(f"{inp.name}: the array contains NaN or infinite samples.")
            yield data
            return
        yield from audio_mod.stream(inp)

    def _run(self, inputs, arrays=None, progress: ProgressFn | None = None):
        self.load()
        if self.config.chunking == Chunking.SEQUENTIAL:
            for inp in inputs:
                try:
                    yield inp, self._sequential(inp, arrays)
                except WhisperctlError as exc:
                    yield inp, exc
            return
        yield from self._batched(inputs, arrays, progress)

    def _batched(self, inputs, arrays, progress):
        cfg = self.config
        states = [_FileState(inp) for inp in inputs]
        next_to_yield = 0
        batch: list[tuple[_FileState, longform.Window]] = []

        def finished(state: _FileState) -> bool:
            return state.error is not None or (state.exhausted and state.pending == 0)

        def drain():
            nonlocal next_to_yield
            while next_to_yield < len(states) and finished(states[next_to_yield]):
                state = states[next_to_yield]
                next_to_yield += 1
                yield state.source, (state.error if state.error else self._finish(state))
                state.tokens.clear()

        def run(items):
            self._decode_batch(items, progress)
            return self._gap_windows({id(s): s for s, _ in items}.values())

        for state in states:
            try:
                for window in longform.windows(self._blocks(state.source, arrays), cfg.chunk_length_s, cfg.overlap_s):
                    state.windows[window.index] = (window.start, window.duration)
                    state.pending += 1
                    batch.append((state, window))
                    while len(batch) >= cfg.batch_size:
                        head, batch = batch[: cfg.batch_size], batch[cfg.batch_size :]
                        batch += run(head)
                        yield from drain()
                state.last_index = max((int(i) for i in state.windows), default=None)
            except WhisperctlError as exc:
                state.error = exc
                batch = [(s, w) for s, w in batch if s is not state]
            state.exhausted = True
            batch += self._gap_windows([state])
            yield from drain()
        while batch:
            head, batch = batch[: cfg.batch_size], batch[cfg.batch_size :]
            batch += run(head)
            yield from drain()

    def _gap_windows(self, states: Iterable[_FileState]) -> list[tuple[_FileState, longform.Window]]:
        """Windows for audio no decoded window transcribed.

        A window's single decoding pass ends at its last complete segment, so up to several seconds before the
        window's end may stay untranscribed; when that tail reaches past the start of the next window, the
        speech in between would be lost. A gap window starting where the transcription stopped covers it (the
        batched counterpart of openai-whisper's seeking). Only regular windows spawn gap windows.
        """
        out: list[tuple[_FileState, longform.Window]] = []
        if self.config.weights != "pretrained":
            return out
        for state in states:
            for index in sorted(state.kept):
                a = state.kept[index]
                last = state.exhausted and index == state.last_index
                if not last and (index + 1) not in state.tokens:
                    continue
                del state.kept[index]
                toks = state.tokens.get(index) or []
                if not toks:
                    continue  # silent window: nothing was cut off
                end = toks[-1].end
                if last:
                    gap = end < a.start + a.duration - 2.0
                    stop = a.start + a.duration
                else:
                    b_start = state.windows[index + 1][0]
                    gap = end < b_start - 0.2
                    stop = min(end + self.config.chunk_length_s, b_start + state.windows[index + 1][1])
                if not gap:
                    continue
                samples = self._audio_between(state, a, end, stop)
                if len(samples) < audio_mod.SAMPLE_RATE // 10:
                    continue
                g = longform.Window(index + 0.5, end, samples)  # type: ignore[arg-type]
                state.windows[g.index] = (g.start, g.duration)
                state.pending += 1
                out.append((state, g))
        return out

    def _audio_between(self, state: _FileState, a: longform.Window, start: float, stop: float) -> np.ndarray:
        """Samples of [start, stop) from window ``a`` and, when needed, the (kept) next window."""
        sr = audio_mod.SAMPLE_RATE
        parts = [a.samples[int(round((start - a.start) * sr)) :]]
        covered = a.start + a.duration
        nxt = state.kept.get(int(a.index) + 1)
        if stop > covered and nxt is not None:
            parts.append(nxt.samples[int(round((covered - nxt.start) * sr)) :])
        return np.concatenate(parts)[: int(round((stop - start) * sr))]

    def _decode_batch(self, batch: list[tuple[_FileState, longform.Window]], progress: ProgressFn | None) -> None:
        """Decode windows together; on CUDA out-of-memory halve the batch and retry, down to one window."""
        limit = self._batch_limit
        if limit is not None and len(batch) > limit:
            for i in range(0, len(batch), limit):
                self._decode_batch(batch[i : i + limit], progress)
            return
        try:
            self._decode_batch_once(batch, progress)
        except OutOfMemoryError:
            raise
        except RuntimeError as exc:
            if not _is_oom(exc):
                raise ModelError(f"decoding failed on {self.plan.device}: {str(exc).splitlines()[0]}") from exc
            _free_cuda_cache()
            if not self.retry_oom or len(batch) == 1:
                raise OutOfMemoryError(
                    f"{self.plan.device} ran out of memory decoding {len(batch)} window(s) with model "
                    f"'{self.config.model}' in {self.plan.dtype.value} at batch size {len(batch)}. Use a smaller or "
                    "distil model, --dtype fp16, --quantize int8, or a smaller --batch-size."
                ) from None
            half = len(batch) // 2
            log.warning("out of memory at batch size %d on %s: continuing with batch size %d", len(batch), self.plan.device, half)
            self._batch_limit = half
            self._decode_batch(batch[:half], progress)
            self._decode_batch(batch[half:], progress)

    def _generate_rows(
        self, feats, languages: list[str | None], want_ts: bool, temperature: float
    ) -> tuple[list[list[int]], list[float] | None]:
        """Decoded rows (prompt included), and each row's no-speech probability when the lean loop read it."""
        kw = self._generate_kwargs(want_ts, temperature)
        if self.greedy is not None and temperature == 0 and kw["num_beams"] == 1 and "prompt_ids" not in kw:
            prompts = [self._prefix(lang, want_ts) for lang in languages]
            hidden = self.model.get_encoder()(feats)[0]
            rows, no_speech = self.greedy(
                hidden, prompts, want_ts, kw.get("max_new_tokens"), kw.get("min_new_tokens") or 0, self.no_speech_id
            )
            return [p + r for p, r in zip(prompts, rows)], no_speech
        if self.multilingual:
            kw["language"] = languages
        if self.unique_call:
            # One decoding pass per window: transformers would otherwise seek past the last timestamp and decode
            # the window's tail again with timestamps restarting at 0; the overlapping next window covers it.
            kw["force_unique_generate_call"] = True
        out = self.model.generate(input_features=feats, **kw)
        sequences = out["sequences"] if isinstance(out, dict) else out
        return sequences.tolist(), None  # copies to the host: the device is synchronised here

    def _generated_count(self, row: list[int], timestamps: bool) -> int:
        """Tokens the decoder generated in ``row``: without the prompt some transformers versions echo, and
        without trailing end-of-text/padding."""
        n = len(row)
        while n and row[n - 1] == self.eos_id:
            n -= 1
        start = 0
        if row and row[0] == self.model.generation_config.decoder_start_token_id:
            start = min(n, len(self._prefix(None, timestamps)))
        return max(0, n - start)

    def _prefix(self, language: str | None, timestamps: bool) -> list[int]:
        """The decoder prompt generate() uses: start, [language, task], [no-timestamps]."""
        gen = self.model.generation_config
        prefix = [int(gen.decoder_start_token_id)]
        if self.multilingual:
            prefix += [int(gen.lang_to_id[f"<|{language or 'en'}|>"]), int(gen.task_to_id[self.config.task.value])]
        if not timestamps:
            prefix.append(int(gen.no_timestamps_token_id))
        return prefix

    def _silent_windows(
        self, hidden, rows: list[list[int]], languages: list[str | None], timestamps: bool,
        p_no_speech: list[float] | None = None,
    ) -> list[bool]:
        """openai-whisper's rule: a window is silence when P(no-speech) at the start token exceeds
        NO_SPEECH_THRESHOLD and the decoded tokens' mean log-probability is below LOGPROB_THRESHOLD; a window
        whose text has no letter or digit at all is dropped too. ``p_no_speech``: the probabilities when the
        decoding loop already read them (else one decoder step over the batch computes them)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        no_speech = self.no_speech_id
        if no_speech is None:
            return [False] * len(rows)
        if p_no_speech is None:
            sot = torch.full((len(rows), 1), int(self.model.generation_config.decoder_start_token_id), device=hidden.device)
            logits = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), decoder_input_ids=sot).logits
            p_no_speech = torch.softmax(logits[:, 0].float(), dim=-1)[:, no_speech].tolist()
        silent = []
        for i, (row, p) in enumerate(zip(rows, p_no_speech)):
            tokens = [t for t in row if t < self.eos_id or t >= self.timestamp_begin]
            text = self._decode([t for t in tokens if t < self.eos_id])
            if not any(ch.isalnum() for ch in text):
                silent.append(True)  # punctuation alone (a lone "." on noise) carries no words
                continue
            if p <= NO_SPEECH_THRESHOLD:
                silent.append(False)
                continue
            prefix = self._prefix(languages[i], timestamps)
            ids = torch.tensor([prefix + tokens], device=hidden.device)
            out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[i : i + 1]), decoder_input_ids=ids)
            logprobs = torch.log_softmax(out.logits[0, len(prefix) - 1 : -1].float(), dim=-1)
            mean = logprobs[torch.arange(len(tokens)), torch.tensor(tokens, device=hidden.device)].mean().item()
            silent.append(mean < LOGPROB_THRESHOLD)
        return silent

    def _install_encoder_timer(self) -> None:
        """Forward hooks that time the encoder (synchronising CUDA), for bench's encoder/decoder split."""
        if getattr(self, "_encoder_timer", False):
            return
        import torch

        encoder = self.model.get_encoder()
        cuda = self.plan.device.startswith("cuda")
        started: list[float] = []

        def pre(module, args, kwargs=None):
            if cuda:
                torch.cuda.synchronize()
            started.append(time.perf_counter())

        def post(module, args, output):
            if cuda:
                torch.cuda.synchronize()
            if started:
                self._encoder_s += time.perf_counter() - started.pop()

        encoder.register_forward_pre_hook(pre)
        encoder.register_forward_hook(post)
        self._encoder_timer = True

    def _decode_batch_once(self, batch: list[tuple[_FileState, longform.Window]], progress: ProgressFn | None) -> None:
        cfg = self.config
        t0 = time.perf_counter()
        # Windows are always decoded with timestamps: without them Whisper sometimes ends a 30 s window early
        # (measured: 20 % WER on the LJ file with int8), and the seam merge needs token times.
        want_ts = cfg.weights == "pretrained"
        feats = self._features([w.samples for _, w in batch])
        features_s = time.perf_counter() - t0
        self._encoder_s = 0.0
        if self.batch_observer is not None:
            self._install_encoder_timer()
        with self._attention_context():
            first = [i for i, (s, w) in enumerate(batch) if s.language is None]
            if first:
                langs = self._detect_languages(feats[first])
                for i, lang in zip(first, langs):
                    batch[i][0].language = lang
            languages = [s.language for s, _ in batch]
            # Keep the encoder output generate() computes, for the no-speech check (no second encoder pass).
            captured: list[Any] = []
            encoder = self.model.get_encoder()
            hook = encoder.register_forward_hook(lambda m, a, o: captured.append(o[0]) if not captured else None)
            try:
                rows, p_no_speech = self._generate_rows(feats, languages, want_ts, cfg.temperature[0])
            finally:
                hook.remove()
            # Temperature fallback, as openai-whisper: a window whose text compresses too well is a repetition
            # loop; decode just those windows again at the next temperature.
            for temperature in cfg.temperature[1:]:
                redo = [i for i, r in enumerate(rows) if _compression_ratio(self._decode([t for t in r if t < self.eos_id])) > COMPRESSION_RATIO_THRESHOLD]
                if not redo or cfg.weights != "pretrained" or cfg.decode_tokens:
                    break
                again, _ = self._generate_rows(feats[redo], [languages[i] for i in redo], want_ts, temperature)
                for i, r in zip(redo, again):
                    rows[i] = r
            if cfg.weights == "pretrained":
                hidden = captured[0] if captured and captured[0].shape[0] == len(batch) else encoder(feats)[0]
                silent = self._silent_windows(hidden, rows, [s.language for s, _ in batch], want_ts, p_no_speech)
                rows = [[] if quiet else r for r, quiet in zip(rows, silent)]
        elapsed = time.perf_counter() - t0
        if self.batch_observer is not None:
            tokens = sum(self._generated_count(r, want_ts) for r in rows)
            self.batch_observer({"size": len(batch), "seconds": elapsed, "features_s": features_s,
                                 "encoder_s": self._encoder_s, "tokens": tokens,
                                 "audio_s": sum(w.duration for _, w in batch)})
        for (state, window), ids in zip(batch, rows):
            timed = longform.parse_window(
                ids, window.index, window.start, window.duration, self.eos_id, self.timestamp_begin,
                lambda t: len(self._token_str(t)),
            )
            state.decode_s += elapsed / len(batch)
            if cfg.timestamps == Timestamps.WORD and timed and cfg.weights == "pretrained":
                ta = time.perf_counter()
                times = self._align(window.samples, [t.id for t in timed], state.language or "en")
                for tok, (s, e, p) in zip(timed, times):
                    tok.start, tok.end, tok.probability = window.start + s, window.start + e, p
                state.align_s += time.perf_counter() - ta
            state.tokens[window.index] = timed
            if isinstance(window.index, int):
                state.kept[window.index] = window
            state.pending -= 1
            if progress and isinstance(window.index, int):  # gap windows re-cover audio already counted
                progress(state.source.name, window.duration if window.index == 0 else window.duration - cfg.overlap_s)

    def _finish(self, state: _FileState) -> Transcript:
        merged: list[longform.TimedToken] = []
        duration = 0.0
        prev_end = None
        for index in sorted(state.windows):
            start, dur = state.windows[index]
            if prev_end is None:
                merged = list(state.tokens.get(index, []))
            else:
                merged = longform.merge(merged, state.tokens.get(index, []), start, prev_end)
            prev_end = start + dur
            duration = max(duration, start + dur)
        return self._transcript(state, merged, duration)

    def _transcript(self, state: _FileState, merged: list[longform.TimedToken], duration: float) -> Transcript:
        cfg = self.config
        segments = longform.build_segments(
            merged, self._decode, duration, with_words=cfg.timestamps == Timestamps.WORD, is_word_start=self._is_word_start
        )
        text = self._decode([t.id for t in merged]).strip()
        total = time.perf_counter() - state.started
        return Transcript(
            source=state.source.name,
            text=text,
            segments=segments,
            language=state.language,
            duration=round(duration, 3),
            config=cfg.to_dict(),
            runtime=self.runtime_info(),
            timings={
                "decode_s": round(state.decode_s, 4),
                "align_s": round(state.align_s, 4),
                "total_s": round(total, 4),
                "rtfx": round(duration / total, 2) if total > 0 else None,
            },
        )

    # ----------------------------------------------------------- sequential
    def _sequential(self, inp: audio_mod.AudioInput, arrays) -> Transcript:
        """transformers' own long-form loop: timestamps, temperature fallback, conditioning on previous text."""
        cfg = self.config
        state = _FileState(inp)
        samples = np.concatenate(list(self._blocks(inp, arrays)) or [np.zeros(0, np.float32)])
        duration = len(samples) / audio_mod.SAMPLE_RATE
        if duration <= longform.TIME_PRECISION * 1500:  # fits one window: identical to the batched path
            state.windows[0] = (0.0, duration)
            state.pending = 1
            self._decode_batch([(state, longform.Window(0, 0.0, samples))], None)
            state.exhausted = True
            return self._finish(state)
        t0 = time.perf_counter()
        import torch

        inputs = self.feature_extractor(
            samples, sampling_rate=audio_mod.SAMPLE_RATE, return_tensors="pt", truncation=False,
            padding="longest", return_attention_mask=True,
        )
        feats = inputs.input_features.to(self.plan.device, dtype=getattr(torch, TORCH_DTYPES[self.plan.dtype]))
        with self._attention_context():
            state.language = self._detect_languages(feats[:, :, :3000])[0]
            kw = self._generate_kwargs(True)
            if self.multilingual:
                kw["language"] = state.language
            kw.update(return_segments=True, condition_on_prev_tokens=True, attention_mask=inputs.attention_mask.to(self.plan.device))
            if len(cfg.temperature) == 1:
                kw.update(no_speech_threshold=None, logprob_threshold=None, compression_ratio_threshold=None)
            out = self.model.generate(input_features=feats, **kw)
        state.decode_s = time.perf_counter() - t0
        merged: list[longform.TimedToken] = []
        for k, seg in enumerate(out["segments"][0]):
            start, end = float(seg["start"]), min(float(seg["end"]), duration)
            ids = [int(t) for t in seg["tokens"].tolist()]
            span = max(end - start, 0.0)
            ids_text = [t for t in ids if t < self.eos_id]
            timed = longform.parse_window(
                ids_text, k, start, span, self.eos_id, self.timestamp_begin, lambda t: len(self._token_str(t))
            )
            if cfg.timestamps == Timestamps.WORD and timed:
                ta = time.perf_counter()
                lo = int(start * audio_mod.SAMPLE_RATE)
                chunk = samples[lo : lo + int(30 * audio_mod.SAMPLE_RATE)]
                for tok, (s, e, p) in zip(timed, self._align(chunk, [t.id for t in timed], state.language or "en")):
                    tok.start, tok.end, tok.probability = start + s, start + e, p
                state.align_s += time.perf_counter() - ta
            merged.extend(timed)
        return self._transcript(state, merged, duration)


def _compression_ratio(text: str) -> float:
    import zlib

    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def _supports_unique_call(model: Any) -> bool:
    import inspect

    return "force_unique_generate_call" in inspect.signature(model.generate).parameters


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower()


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def transcribe(source: str | np.ndarray, config: EngineConfig | None = None, **options: Any) -> Transcript:
    """One-call convenience: ``transcribe("a.wav", attention="sdpa")``."""
    cfg = EngineConfig.from_mapping(options, base=config or EngineConfig()) if options else (config or EngineConfig())
    return Transcriber(cfg).transcribe(source)
