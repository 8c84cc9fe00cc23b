"""The generate backend: transformers' ``generate()`` (``--decoder generate``, and where the lean loop cannot run).

``generate()`` encodes inside; the encoder output it computed is kept (a forward hook) for what comes after it: the
no-speech probability and the log-probability sums come from one teacher-forced scoring pass over its rows (so the
policy judges its rows by the numbers the lean loop reads in its steps), language detection is one decoder step,
and word timing runs the lean loop's forced pass over transformers' model (the model already loaded, never a
second one). A sampled pass draws each row from its own generator, seeded by the window's key as the lean loop's
rows are (:class:`~whisperctl.leansearch.RowDraws`, applied as the last logits processor of a greedy
``generate()``): a window's draws do not depend on its batch, and both backends draw the same noise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from . import Found, Prompt, SearchOptions, Windows

if TYPE_CHECKING:
    from ..loaded import LoadedModel

class GenerateBackend:
    name = "generate"

    def __init__(self, loaded: "LoadedModel"):
        self.loaded = loaded
        self._model: Any = None if loaded.native else loaded.model
        self._alignment: Any = None

    @property
    def model(self) -> Any:
        """transformers' WhisperForConditionalGeneration: the loaded model itself, or — when that is whisperctl's
        native one — transformers' model with the same weights and quantization, loaded on first need (2-3 s)."""
        if self._model is None:
            self._model = transformers_model(self.loaded)
        return self._model

    @property
    def _encoder(self) -> Any:
        return self.model.get_encoder()

    @property
    def unique_call(self) -> bool:
        """Whether generate() takes force_unique_generate_call (one pass per window)."""
        import inspect

        return "force_unique_generate_call" in inspect.signature(self.model.generate).parameters

    def alignment_decoder(self) -> Any:
        """The lean loop over transformers' loaded model, for word timing's forced pass (built on first need; never
        a second model): the pass's own attention, the alignment heads' weights computed apart in fp32."""
        if self._alignment is None:
            from ..leanloop import LeanDecoder
            from ..loaded import lean_attention

            self._alignment = LeanDecoder(self.model, lean_attention(self.loaded.plan.attention.hf_name))
        return self._alignment

    def _run_encoder(self, features: Any) -> Any:
        return self._encoder(features)[0]

    def encode(self, features: Any) -> Windows:
        return Windows(features, self._run_encoder)  # generate() encodes inside: the output is kept from there

    def search(self, windows: Windows, prompts: Sequence[Prompt], options: SearchOptions, task: str) -> Found:
        rows, hidden = self._generate(windows.features, prompts, options, task)
        windows.remember(hidden)
        no_speech, sums = self._score(hidden, [p.tokens for p in prompts], rows)
        return Found(rows, no_speech, sums)

    def _generate(self, feats, prompts: Sequence[Prompt], options: SearchOptions, task: str) -> tuple[list[list[int]], Any]:
        """Rows of generated tokens (prompt removed), and the encoder output."""
        import torch

        lm = self.loaded
        kw: dict[str, Any] = {"return_timestamps": options.timestamps, "num_beams": options.beam_size, "do_sample": False}
        if options.max_new_tokens:
            kw["max_new_tokens"] = options.max_new_tokens
        if options.min_new_tokens:
            kw["min_new_tokens"] = options.min_new_tokens
        if options.temperature > 0:
            kw["num_beams"] = 1  # sampled: greedy over scores perturbed per row (_RowSampler, below)
        if lm.multilingual:
            kw["task"] = task
        if self.unique_call:
            # One decoding pass per window: transformers would otherwise seek past the last timestamp and decode
            # the window's tail again with timestamps restarting at 0; the overlapping next window covers it.
            kw["force_unique_generate_call"] = True
        captured: list[Any] = []
        hook = self._encoder.register_forward_hook(lambda m, a, o: captured.append(o[0]) if not captured else None)
        try:
            groups = _group_by_head(prompts)
            rows: list[list[int]] = [[] for _ in prompts]
            for head, idx in groups:
                call = dict(kw)
                processors = [_LoopStop(lm.eos_id)] if options.stop_loops else []
                if options.temperature > 0:
                    from .lean import window_seed

                    keys = options.keys
                    seeds = [window_seed(options.seed, keys[i] if keys else i, options.temperature) for i in idx]
                    processors.append(_RowSampler(options.temperature, seeds, lm.plan.device))
                if processors:
                    from transformers import LogitsProcessorList

                    call["logits_processor"] = LogitsProcessorList(processors)
                if head:
                    call["prompt_ids"] = torch.tensor(head, device=lm.plan.device)
                if lm.multilingual:
                    call["language"] = [prompts[i].language for i in idx]
                out = self.model.generate(input_features=feats[idx], **call)
                sequences = out["sequences"] if isinstance(out, dict) else out
                for i, row in zip(idx, sequences.tolist()):  # copies to the host: the device is synchronised
                    rows[i] = self._strip_prompt(row, prompts[i])
        finally:
            hook.remove()
        whole = len(groups) == 1 and captured and captured[0].shape[0] == len(prompts)
        return rows, captured[0] if whole else self._run_encoder(feats)

    def _strip_prompt(self, row: list[int], prompt: Prompt) -> list[int]:
        """generate()'s row without the prompt some transformers versions echo, and without padding."""
        lm = self.loaded
        if lm.sot_id in row[: lm.max_length // 2 + 4]:
            row = row[row.index(lm.sot_id) + len(prompt.prefix):]
        finished = bool(row) and row[-1] == lm.eos_id  # rows cut at the length limit have no end-of-text
        while row and row[-1] == lm.eos_id:
            row = row[:-1]
        return row + [lm.eos_id] if finished else row

    def _score(self, hidden, prompts: list[list[int]], rows: list[list[int]]) -> tuple[list[float] | None, list[float]]:
        """No-speech probability at the start-of-transcript position (from a pass over the prompts alone, as the
        lean loop's first step computes it: dynamic int8 scales each Linear's input over the whole tensor) and
        the sum of the generated tokens' log-probabilities, end-of-text included (one teacher-forced pass)."""
        import torch

        lm = self.loaded
        no_speech = None
        if lm.no_speech_id is not None:
            logits = self._logits(hidden, prompts)
            no_speech = [
                float(torch.softmax(logits[i, p.index(lm.sot_id)].float(), dim=-1)[lm.no_speech_id]) for i, p in enumerate(prompts)
            ]
        logprobs = torch.log_softmax(self._logits(hidden, [p + r for p, r in zip(prompts, rows)]).float(), dim=-1)
        sums = []
        for i, (p, r) in enumerate(zip(prompts, rows)):
            positions = torch.arange(len(p) - 1, len(p) - 1 + len(r), device=hidden.device)
            sums.append(float(logprobs[i, positions, torch.tensor(r, device=hidden.device)].sum()) if r else 0.0)
        return no_speech, sums

    def _logits(self, hidden, sequences: list[list[int]]):
        """Decoder logits for token sequences (right-padded with end-of-text: the decoder is causal)."""
        import torch
        from transformers.modeling_outputs import BaseModelOutput

        lm = self.loaded
        sequences = [s[: lm.max_length] for s in sequences]
        width = max(len(s) for s in sequences)
        ids = torch.tensor([s + [lm.eos_id] * (width - len(s)) for s in sequences], device=hidden.device)
        return self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), decoder_input_ids=ids).logits

    def first_logits(self, windows: Windows, token: int) -> Any:
        return self._logits(windows.hidden, [[token]] * len(windows))[:, 0].float()

    def cross_attention(self, windows: Windows, tokens: Any, heads: Sequence[tuple[int, int]]) -> tuple[Any, Any]:
        return self.alignment_decoder().cross_attention(windows.hidden, tokens, heads)

    def token_logits(self, states: Any) -> Any:
        return self.model.proj_out(states)


def transformers_model(loaded: "LoadedModel") -> Any:
    """transformers' WhisperForConditionalGeneration for ``loaded``: the model itself, or — when that is
    whisperctl's native one — transformers' model loaded now with the same weights and quantization (2-3 s; a
    :class:`GenerateBackend` keeps the one it loads)."""
    if not loaded.native:
        return loaded.model
    import logging
    import time

    from ..loading import load_model

    t0 = time.perf_counter()
    model = load_model(loaded.config, loaded.plan, loaded.source, native_ok=False)[0]
    logging.getLogger(__name__).debug("loaded transformers' model for generate() in %.2fs", time.perf_counter() - t0)
    return model


class _RowSampler:
    """A logits processor for ``generate()``: each row's scores divided by the temperature plus Gumbel noise from
    the row's own generator, so that ``generate()``'s greedy choice is a draw from softmax(scores / T) that depends
    on the row's seed alone (the lean loop's :class:`~whisperctl.leansearch.RowDraws`, the same noise)."""

    def __init__(self, temperature: float, seeds: Sequence[int], device: str):
        from ..leansearch import RowDraws

        self.temperature, self.draws = temperature, RowDraws(seeds, device)

    def __call__(self, input_ids, scores):
        return self.draws.perturbed(scores, self.temperature)


class _LoopStop:
    """A logits processor for ``generate()``: gives end-of-text to rows whose generated text is a repetition loop
    (the lean loop's :class:`~whisperctl.repetition.LoopGuard`, over the tokens after the prompt)."""

    def __init__(self, eos: int):
        from ..repetition import LoopGuard

        self.guard, self.eos = LoopGuard(eos), eos
        self.start: int | None = None  # the prompt's length: the first call sees the prompt alone

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = int(input_ids.shape[1])
        if self.guard.due(int(input_ids.shape[1]) - self.start):  # as the lean loop: after 8, 16 … tokens
            looping = self.guard.looping(input_ids[:, self.start :].tolist())
            if looping:
                scores[looping] = float("-inf")
                scores[looping, self.eos] = 0.0
        return scores


def _group_by_head(prompts: Sequence[Prompt]) -> list[tuple[list[int], list[int]]]:
    """(prompt head, row indices) for each distinct head: generate() takes one text prompt per call."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(tuple(p.head), []).append(i)
    return [(list(k), v) for k, v in groups.items()]
