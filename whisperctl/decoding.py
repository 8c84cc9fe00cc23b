"""Decoding: a batch of ≤ 30 s windows in, one :class:`WindowResult` per window out.

This module owns the decoding policy, the same for both chunking modes (openai-whisper's rules, named in
:class:`~whisperctl.config.DecodeOptions`):

1. each window is decoded at the first temperature (greedy or beam search);
2. a window whose text compresses like a repetition loop (gzip ratio > ``compression_ratio_threshold``) or
   whose mean token log-probability is below ``logprob_threshold`` is decoded again at the next temperature
   (sampled, seeded per pass so a rerun gives the same text), unless its no-speech probability says silence;
3. a window whose no-speech probability exceeds ``no_speech_threshold`` while its log-probability is below
   ``logprob_threshold`` is silence, and so is one whose text has no letter or digit: no text;
4. a decode whose text becomes a repetition loop is stopped there (:mod:`whisperctl.repetition`) and fails like a
   too-repetitive one; a window that fails at every temperature keeps its least-bad attempt
   (:func:`best_attempt`) and carries a warning (:data:`WARNINGS`) into its segments and the transcript.

It also detects the language of windows that have none and, as the run's :class:`~whisperctl.config.RunControl`
says, halves the batch on CUDA out-of-memory or forces a fixed number of tokens per window (benchmarks). What runs the
model is a :class:`~whisperctl.backends.Backend` (whisperctl's lean loop or transformers' ``generate()``), asked the
same questions whichever it is. Each window is logged at debug level with the numbers behind these decisions.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import zlib
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .backends import Backend, Prompt, SearchOptions, Windows
from .config import DecodeOptions, Quantization, RunControl, Timestamps
from .errors import ModelError, OutOfMemoryError
from .loaded import LoadedModel
from .repetition import trailing_loop

log = logging.getLogger(__name__)

LANGUAGE_CANDIDATES = 5  # detected languages reported per file, best first
LANGUAGE_SURE = 0.5  # a first window's top language at least this likely decides the file's language alone
LANGUAGE_WINDOWS = 4  # else the mean over up to this many of the file's first windows (those in its first batch)

#: Why a window's kept text is suspect: every temperature failed, and the least-bad attempt was kept.
WARNINGS = {
    "repetition_loop": "the text repeats itself (a decoding loop, stopped there)",
    "repetitive_text": "the text compresses like a loop (gzip ratio above --compression-ratio-threshold)",
    "low_logprob": "the decoder was unsure (mean log-probability below --logprob-threshold)",
}


@dataclasses.dataclass
class WindowResult:
    """One window's decode: its tokens and the numbers openai-whisper's rules judged it by."""

    tokens: list[int]  # generated text and timestamp tokens; no prompt, no end-of-text; [] when silent
    language: str | None
    avg_logprob: float  # sum of the chosen tokens' log-probabilities / (tokens + 1), before the logit rules
    no_speech_prob: float | None  # P(<|nospeech|>) at the start-of-transcript position
    compression_ratio: float  # gzip ratio of the text
    temperature: float  # of the decode that was kept
    text: str = ""  # the tokens' text ("" when silent)
    silent: bool = False  # judged silence: tokens dropped
    # word timestamps: (start, end, probability) per text token, seconds from the window start
    token_times: list[tuple[float, float, float]] | None = None
    align_s: float = 0.0  # this window's share of the batch's word-alignment time
    # when this window's language was detected: the most likely languages with their probabilities, best first
    language_candidates: list[tuple[str, float]] | None = None
    looped: bool = False  # the text ends in a repetition loop (whisperctl.repetition); the decode stopped there
    # a code of WARNINGS when every temperature failed (the least-bad attempt was kept, see best_attempt); else None
    warning: str | None = None
    cut: bool = False  # the decode stopped at --max-new-tokens, not at end-of-text: the text is incomplete


@dataclasses.dataclass(frozen=True)
class BatchStats:
    """What one forward batch cost (for ``bench``), reported through ``on_batch``."""

    size: int  # windows
    seconds: float  # wall time of the batch, all passes included
    features_s: float
    encoder_s: float  # encoder forward time (CUDA synchronised)
    tokens: int  # generated tokens in the kept decodes
    audio_s: float
    cut: int = 0  # kept decodes with text that stopped at --max-new-tokens (their text is incomplete)


BatchObserver = Callable[[BatchStats], None]


def compression_ratio(text: str) -> float:
    """openai-whisper's repetition measure: bytes of the text over bytes of its zlib compression."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def needs_fallback(result: WindowResult, options: DecodeOptions) -> bool:
    """openai-whisper's rule: too repetitive or too unlikely, unless the window is silence; a decode stopped in a
    repetition loop is too repetitive."""
    low_logprob = options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold
    repetitive = result.looped or (options.compression_ratio_threshold is not None
                                   and result.compression_ratio > options.compression_ratio_threshold)
    silence = (
        options.no_speech_threshold is not None and result.no_speech_prob is not None
        and result.no_speech_prob > options.no_speech_threshold and low_logprob
    )
    return (repetitive or low_logprob) and not silence


def pick_language(probs: Any, codes: Sequence[str]) -> list[tuple[str, float]]:
    """One file's language from the language distributions (rows: its windows in order, each a softmax over
    ``codes``): the first window's, when its top language reaches ``LANGUAGE_SURE`` (faster-whisper's default
    threshold); else the mean distribution of up to ``LANGUAGE_WINDOWS`` windows (as faster-whisper's
    ``language_detection_segments``, with the distributions averaged rather than the top languages voted).
    Returns the top ``LANGUAGE_CANDIDATES`` (code, probability), best first."""
    import torch

    first = probs[0]
    chosen = first if float(first.max()) >= LANGUAGE_SURE else probs[:LANGUAGE_WINDOWS].mean(dim=0)
    top = torch.topk(chosen, k=min(LANGUAGE_CANDIDATES, len(codes)))
    return [(codes[j], round(float(p), 4)) for p, j in zip(top.values.tolist(), top.indices.tolist())]


def best_attempt(attempts: Sequence[WindowResult], options: DecodeOptions) -> WindowResult:
    """The attempt to keep when every temperature failed (faster-whisper's rule): the most likely one (mean token
    log-probability) among those that are not too repetitive (loops are), or among all when each is (the first on
    ties). A loop is kept only when every attempt was one, and then only up to where it was stopped."""
    limit = options.compression_ratio_threshold
    plain = [r for r in attempts if not r.looped and (limit is None or r.compression_ratio <= limit)]
    return max(plain or attempts, key=lambda r: r.avg_logprob)


def warning_of(result: WindowResult, options: DecodeOptions) -> str | None:
    """The :data:`WARNINGS` code of a kept decode that still fails the fallback rule (None when it passes or is
    silence)."""
    if result.silent or not needs_fallback(result, options):
        return None
    if result.looped:
        return "repetition_loop"
    limit = options.compression_ratio_threshold
    return "repetitive_text" if limit is not None and result.compression_ratio > limit else "low_logprob"


def is_silence(result: WindowResult, text: str, options: DecodeOptions) -> bool:
    """openai-whisper's no-speech rule, and punctuation alone (a lone '.' on noise) carries no words."""
    if not any(ch.isalnum() for ch in text):
        return True
    if options.no_speech_threshold is None or result.no_speech_prob is None:
        return False
    if result.no_speech_prob <= options.no_speech_threshold:
        return False
    return options.logprob_threshold is None or result.avg_logprob < options.logprob_threshold


class WindowDecoder:
    """Decodes batches of windows under one :class:`DecodeOptions` and one :class:`RunControl` (one each per
    ``transcribe*()`` call): the decoding policy, over the loaded model's :class:`~whisperctl.backends.Backend`."""

    def __init__(self, loaded: LoadedModel, options: DecodeOptions, on_batch: BatchObserver | None = None,
                 timestamps: bool | None = None, control: RunControl | None = None, backend: Backend | None = None):
        self.loaded = loaded
        self.options = options
        self.control = control or RunControl()  # forced token counts, out-of-memory halving
        self.on_batch = on_batch
        self.backend: Backend = backend if backend is not None else loaded.backend  # another one: tests, tools
        self.batch_limit: int | None = None  # learnt from CUDA out-of-memory during this call
        self.cut_windows = 0  # kept decodes with text that stopped at --max-new-tokens (the caller says so once)
        # Windows are decoded with timestamps: without them Whisper sometimes ends a 30 s window early (measured:
        # 20 % WER on the LJ file with int8), and seams and seeking need token times. Random weights (speed runs)
        # decode untimed, a fixed amount of work.
        self.timestamps = not loaded.random_weights if timestamps is None else timestamps

    # ------------------------------------------------------------------ public
    def decode(
        self, chunks: Sequence[np.ndarray], languages: Sequence[str | None], prompts: Sequence[list[int]] | None = None,
        groups: Sequence[Hashable] | None = None,
    ) -> list[WindowResult]:
        """Decode ``chunks`` (≤ 30 s each) together; ``languages[i]`` None means detect it; ``prompts[i]``: text
        tokens to condition window i on (previous text or the initial prompt); ``groups[i]``: the file of window i
        (windows of one file detected in one batch share one language, see :func:`pick_language`). On CUDA
        out-of-memory the batch is halved and retried (when ``control.halve_on_oom``), down to one window."""
        n = len(chunks)
        prompts = list(prompts) if prompts is not None else [[] for _ in range(n)]
        groups = list(groups) if groups is not None else list(range(n))
        limit = self.batch_limit
        if limit is not None and n > limit:
            out: list[WindowResult] = []
            for i in range(0, n, limit):
                out += self.decode(chunks[i : i + limit], languages[i : i + limit], prompts[i : i + limit], groups[i : i + limit])
            return out
        try:
            return self._decode_once(chunks, list(languages), prompts, groups)
        except OutOfMemoryError:
            raise
        except MemoryError as exc:
            raise self._out_of_ram(chunks, exc) from None
        except RuntimeError as exc:
            if _is_out_of_ram(exc):
                raise self._out_of_ram(chunks, exc) from None
            if not _is_oom(exc):
                raise ModelError(f"decoding failed on {self.loaded.plan.device}: {str(exc).splitlines()[0]}") from exc
            _free_cuda_cache()
            if not self.control.halve_on_oom or n == 1:
                plan = self.loaded.plan
                raise OutOfMemoryError(
                    f"{plan.device} ran out of memory decoding {n} window(s) with model "
                    f"'{self.loaded.source.describe()}' in {plan.dtype.value} at batch size {n}. Use a smaller or "
                    "distil model, --dtype fp16, --quantize int8, or a smaller --batch-size."
                ) from None
            half = n // 2
            log.warning("out of memory at batch size %d on %s: continuing with batch size %d", n, self.loaded.plan.device, half)
            self.batch_limit = half
            return self.decode(chunks[:half], languages[:half], prompts[:half], groups[:half]) + self.decode(
                chunks[half:], languages[half:], prompts[half:], groups[half:])

    def cut_note(self) -> str | None:
        """One line for the end of the call when windows stopped at ``--max-new-tokens`` (None when none did)."""
        if not self.cut_windows:
            return None
        return (f"--max-new-tokens {self.options.max_new_tokens}: {self.cut_windows} window(s) were cut at the limit; "
                "their text is incomplete (raise the limit, or leave it out for the model's maximum).")

    def _out_of_ram(self, chunks: Sequence[np.ndarray], exc: BaseException) -> OutOfMemoryError:
        """The host's memory ran out (torch's ``DefaultCPUAllocator: can't allocate memory``, or a MemoryError):
        what was being decoded, and what needs less memory. CUDA's out-of-memory halves the batch instead."""
        plan, opts = self.loaded.plan, self.options
        tried = re.search(r"tried to allocate (\d+) bytes", str(exc))
        size = int(tried.group(1)) if tried else 0
        amount = f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size} bytes"
        failed = f" (an allocation of {amount} failed)" if tried else ""
        fixes = ["a smaller --batch-size" + (" or --beam-size" if opts.beam_size > 1 else "")]
        if plan.quantization == Quantization.NONE:
            fixes.append("--quantize int8")
        return OutOfMemoryError(
            f"out of memory (RAM) decoding a batch of {len(chunks)} window(s) at beam size {opts.beam_size} with model "
            f"'{self.loaded.source.describe()}' in {plan.dtype.value} on {plan.device}{failed}. "
            f"Try {', or '.join(fixes)}.")

    def decode_pass(
        self, chunks: Sequence[np.ndarray], languages: Sequence[str | None] | None = None,
        prompts: Sequence[list[int]] | None = None, temperature: float = 0.0,
    ) -> list[WindowResult]:
        """One decoding pass at ``temperature``, without the fallback and silence rules: what the decoding loop
        produced, with the numbers the rules would judge."""
        lm = self.loaded
        prompts = list(prompts) if prompts else [[] for _ in chunks]
        with lm.attention_context():
            windows = self.backend.encode(lm.features(chunks))
            given = list(languages) if languages else [None] * len(chunks)
            langs, _ = detect_languages(lm, self.backend, self.options.language, windows, given, range(len(chunks)))
            return self._pass(windows, langs, prompts, temperature)

    # ---------------------------------------------------------------- private
    def _decode_once(self, chunks, languages: list[str | None], prompts: list[list[int]], groups: list[Hashable]) -> list[WindowResult]:
        lm, opts = self.loaded, self.options
        random_weights = lm.random_weights
        t0 = time.perf_counter()
        feats = lm.features(chunks)
        features_s = time.perf_counter() - t0
        timer = _EncoderTimer(lm) if self.on_batch is not None else None
        try:
            with lm.attention_context():
                windows = self.backend.encode(feats)  # detection, the first pass and fallbacks share it
                languages, candidates = detect_languages(lm, self.backend, opts.language, windows, languages, groups)
                digests: dict[int, int] = {}  # the windows' audio digests, computed once, if a sampled pass runs
                results = self._sampled_pass(windows, languages, prompts, list(range(len(chunks))), opts.temperature[0],
                                             chunks, digests)
                if not random_weights and not self.control.decode_tokens:
                    self._fallback(windows, languages, prompts, results, chunks, digests)
                    self._unprompted_if_silent(windows, languages, prompts, results, chunks, digests)
                for r, found in zip(results, candidates):
                    r.language_candidates = found
                for r in results:
                    if not random_weights and is_silence(r, r.text, opts):
                        r.silent, r.tokens, r.text = True, [], ""
                    if not random_weights and not self.control.decode_tokens:
                        r.warning = warning_of(r, opts)
                if opts.timestamps == Timestamps.WORD and not random_weights:
                    self._align(windows, results, [len(c) / SAMPLE_RATE for c in chunks])
        finally:
            if timer is not None:
                timer.remove()
        cut = sum(r.cut and not r.silent and not random_weights for r in results)
        self.cut_windows += cut
        for i, r in enumerate(results):
            log.debug("window %d/%d: T=%.1f avg_logprob=%.3f no_speech=%s ratio=%.2f %s %r", i + 1, len(results),
                      r.temperature, r.avg_logprob, "-" if r.no_speech_prob is None else f"{r.no_speech_prob:.3f}",
                      r.compression_ratio, "silent" if r.silent else "kept", r.text[:60])
        if self.on_batch is not None:
            self.on_batch(BatchStats(
                size=len(chunks), seconds=time.perf_counter() - t0, features_s=features_s,
                encoder_s=timer.seconds if timer else 0.0, tokens=sum(len(r.tokens) for r in results),
                audio_s=sum(len(c) for c in chunks) / SAMPLE_RATE, cut=cut,
            ))
        return results

    def _align(self, windows: Windows, results: list[WindowResult], seconds: list[float]) -> None:
        from .alignment import token_timings

        lm = self.loaded
        t0 = time.perf_counter()
        prefixes = [lm.prefix(r.language, self.options.task, timestamps=False) for r in results]
        texts = [[t for t in r.tokens if t < lm.eos_id] for r in results]
        timings = token_timings(lm, self.backend, windows, prefixes, texts, seconds)
        share = (time.perf_counter() - t0) / len(results)
        for r, times in zip(results, timings):
            r.token_times, r.align_s = times, share

    def _fallback(self, windows: Windows, languages, prompts, results: list[WindowResult],
                  chunks: Sequence[np.ndarray] | None = None, digests: dict[int, int] | None = None) -> None:
        """openai-whisper's temperature fallback; a window that fails at every temperature keeps its least-bad
        attempt (:func:`best_attempt`: as faster-whisper, the highest mean log-probability among the attempts under
        the compression-ratio threshold, loops last), not the last, most random one."""
        attempts: dict[int, list[WindowResult]] = {}
        for temperature in self.options.temperature[1:]:
            redo = [i for i, r in enumerate(results) if needs_fallback(r, self.options)]
            if not redo:
                return
            again = self._sampled_pass(windows, languages, prompts, redo, temperature, chunks, digests)
            for i, r in zip(redo, again):
                attempts.setdefault(i, [results[i]]).append(r)
                results[i] = r
        for i, tried in attempts.items():
            if needs_fallback(results[i], self.options):
                results[i] = best_attempt(tried, self.options)

    def _unprompted_if_silent(self, windows: Windows, languages, prompts, results: list[WindowResult],
                              chunks: Sequence[np.ndarray] | None, digests: dict[int, int]) -> None:
        """A window the silence rule would drop while it was prompted with earlier text is decoded again, fallback
        included, without the prompt, and that verdict stands. The prompt moves the no-speech probability: after
        one speaker's "Alright, thanks." the next window (a second, quieter voice) scored 0.79 no-speech with the
        prompt and lost 30 s of speech, 0.21 without it (docs/benchmarks.md). Silence is a judgement on the audio,
        not on the text before it. Costs one more decode of such windows only (with the default VAD, long silences
        are not decoded at all)."""
        redo = [i for i, r in enumerate(results) if prompts[i] and is_silence(r, r.text, self.options)]
        if not redo:
            return
        sub = windows.rows(redo)
        langs, bare = [languages[i] for i in redo], [[] for _ in redo]
        audio = [chunks[i] for i in redo] if chunks is not None else None
        known = {j: digests[i] for j, i in enumerate(redo) if i in digests}  # audio digests the batch computed
        again = self._sampled_pass(sub, langs, bare, list(range(len(redo))), self.options.temperature[0], audio, known)
        self._fallback(sub, langs, bare, again, audio, known)
        for i, r in zip(redo, again):
            log.debug("window %d/%d: silent after its prompt; without it: no_speech=%s %r", i + 1, len(results),
                      "-" if r.no_speech_prob is None else f"{r.no_speech_prob:.3f}", r.text[:60])
            results[i] = r

    def _sampled_pass(self, windows: Windows, languages, prompts, redo: list[int], temperature: float,
                      chunks: Sequence[np.ndarray] | None, digests: dict[int, int] | None = None) -> list[WindowResult]:
        """The windows ``redo`` decoded at ``temperature``. Above 0, each window draws ``best_of`` candidates in
        one pass and keeps the one with the best log-probability per token (openai-whisper's ranking without a
        length penalty, as faster-whisper's CTranslate2 ranks its ``num_hypotheses``); draw c of a window is
        seeded by the user's seed, a digest of the window's audio and c, so it is the same in any batch."""
        if temperature <= 0:
            return self._pass(windows.rows(redo), [languages[i] for i in redo], [prompts[i] for i in redo], temperature)
        copies = self.options.best_of
        digests = {} if digests is None else digests
        for i in redo:
            if i not in digests:
                digests[i] = _audio_key(chunks[i]) if chunks is not None else i
        keys = digests
        rows = [i for i in redo for _ in range(copies)]
        found = self._pass(windows.rows(rows), [languages[i] for i in rows], [prompts[i] for i in rows], temperature,
                           [keys[i] + c * DRAW_KEY_STEP for i in redo for c in range(copies)])
        return [max(found[j : j + copies], key=per_token_logprob) for j in range(0, len(found), copies)]

    def _pass(self, windows: Windows, languages, prompts: list[list[int]], temperature: float,
              keys: Sequence[int] | None = None) -> list[WindowResult]:
        """One decoding pass at ``temperature`` over every window. ``keys``: a number per window that seeds its
        sampling (a digest of its audio), so a sampled pass gives a window the same text in any batch."""
        lm, opts = self.loaded, self.options
        rows = [Prompt(self._prompt_head(p), lm.prefix(lang, opts.task, timestamps=self.timestamps), lang)
                for p, lang in zip(prompts, languages)]
        forced = self.control.decode_tokens
        if forced:
            max_new, min_new = forced, forced
        else:
            max_new, min_new = opts.max_new_tokens, 0
        # a fixed amount of work (bench's forced tokens, random weights) is never cut short
        stop_loops = not forced and not lm.random_weights
        search = SearchOptions(timestamps=self.timestamps, beam_size=opts.beam_size, temperature=temperature,
                               max_new_tokens=max_new, min_new_tokens=min_new, seed=opts.seed, keys=keys,
                               stop_loops=stop_loops)
        found = self.backend.search(windows, rows, search, opts.task.value)
        out = []
        for i, row in enumerate(found.rows):
            tokens = [t for t in row if t != lm.eos_id]
            cut = not forced and max_new is not None and len(tokens) >= max_new and not (row and row[-1] == lm.eos_id)
            text = lm.decode(tokens)
            out.append(WindowResult(
                tokens=tokens, language=languages[i], avg_logprob=found.logprob_sums[i] / (len(tokens) + 1),
                no_speech_prob=None if found.no_speech is None else found.no_speech[i],
                compression_ratio=compression_ratio(text), temperature=temperature, text=text,
                looped=stop_loops and trailing_loop([t for t in tokens if t < lm.eos_id]) is not None, cut=cut,
            ))
        return out

    def _prompt_head(self, prompt: list[int]) -> list[int]:
        """<|startofprev|> and the prompt's last tokens (at most half the decoder's positions, as openai-whisper)."""
        lm = self.loaded
        return [lm.sot_prev_id, *prompt[-(lm.max_length // 2 - 1):]] if prompt and lm.sot_prev_id is not None else []


def detect_languages(lm: LoadedModel, backend: Backend, language: str | None, windows: Windows,
                     languages: list[str | None], groups: Sequence[Hashable],
                     ) -> tuple[list[str | None], list[list[tuple[str, float]] | None]]:
    """Each window's language (English for an English-only model, ``language`` when the user gave one, the one
    given per window, or detected) and, for detected windows, the top candidates with their probabilities (a
    softmax over the language tokens after start-of-transcript, as openai-whisper and faster-whisper detect; one
    choice per group, :func:`pick_language`)."""
    candidates: list[list[tuple[str, float]] | None] = [None] * len(languages)
    if not lm.multilingual:
        return ["en"] * len(languages), candidates
    from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

    if language:
        return [TO_LANGUAGE_CODE.get(language, language)] * len(languages), candidates
    unknown = [i for i, lang in enumerate(languages) if lang is None]
    if unknown:
        import torch

        codes, ids = zip(*lm.language_ids.items())
        logits = backend.first_logits(windows.rows(unknown), lm.sot_id)
        probs = torch.softmax(logits[:, list(ids)], dim=-1)
        by_group: dict[Hashable, list[int]] = {}
        for row, i in enumerate(unknown):
            by_group.setdefault(groups[i], []).append(row)
        for rows in by_group.values():
            found = pick_language(probs[rows], codes)
            for row in rows:
                candidates[unknown[row]] = found
                languages[unknown[row]] = found[0][0]
    return languages, candidates


# draw c of a window is keyed c steps past its audio digest. Odd: torch's CPU generator seeds from a seed's low 32
# bits only, so a step of 2**32 gave every draw of a window the same seed (five identical candidates).
DRAW_KEY_STEP = 0x9E3779B1


def per_token_logprob(result: WindowResult) -> float:
    """A decode's log-probability per generated token (its end token left out of the count, as openai-whisper's
    ranker without a length penalty): ``avg_logprob`` counts the end token."""
    n = len(result.tokens)
    return result.avg_logprob * (n + 1) / max(n, 1)


def _audio_key(samples: np.ndarray) -> int:
    """A digest of a window's audio (CRC-32 of its samples): with the user's seed and the temperature it seeds the
    window's sampled passes, so the same window gets the same draws whatever else is in its batch."""
    return zlib.crc32(np.ascontiguousarray(samples, dtype=np.float32).view(np.uint8))


class _EncoderTimer:
    """Forward hooks that time the encoder (synchronising CUDA), for bench's encoder/decoder split."""

    def __init__(self, loaded: LoadedModel):
        import torch

        self.seconds = 0.0
        cuda = loaded.plan.device.startswith("cuda")
        started: list[float] = []

        def pre(module, args):
            if cuda:
                torch.cuda.synchronize()
            started.append(time.perf_counter())

        def post(module, args, output):
            if cuda:
                torch.cuda.synchronize()
            if started:
                self.seconds += time.perf_counter() - started.pop()

        encoder = loaded.model.get_encoder()
        self._hooks = [encoder.register_forward_pre_hook(pre), encoder.register_forward_hook(post)]

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()


def _is_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower()


def _is_out_of_ram(exc: BaseException) -> bool:
    """torch's allocation failure in host memory (``DefaultCPUAllocator: can't allocate memory``)."""
    text = str(exc)
    return "DefaultCPUAllocator" in text or "can't allocate memory" in text


def _free_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
