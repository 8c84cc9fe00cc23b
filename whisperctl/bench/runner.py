"""The benchmark matrix: every (model, dtype, quantization, attention, batch size) measured the same way.

Method: each (model, dtype, quantization, attention) gets its own freshly loaded model; before each batch
size the CUDA caches and peak statistics are reset. ``warmup`` runs of one batch are not counted; then
``repeats`` full passes over the inputs are timed through the same engine call ``transcribe`` uses. CUDA work
is synchronised before the clock is read (the token copy to the host at the end of each batch). Rows that
cannot run here are ``skipped: <reason>`` from :mod:`whisperctl.eligibility`; out-of-memory is a row
``OOM at batch N``; nothing in the matrix stops the run.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import gc
import logging
import statistics
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np

from .. import audio as audio_mod
from ..inputs import expand_inputs
from ..config import MAX_BATCH_SIZE, Attention, Chunking, Decoder, DType, EngineConfig, Quantization, Vad, parse_choice
from ..eligibility import Environment, environment_summary, make_plan
from ..errors import EligibilityError, OutOfMemoryError, UsageError, WhisperctlError
from .report import INTERRUPTED

SCHEMA = "whisperctl.bench/1"


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    base: EngineConfig
    models: tuple[str, ...]
    attentions: tuple[Attention, ...]
    dtypes: tuple[DType, ...]
    quantizations: tuple[Quantization, ...]
    batch_sizes: tuple[int, ...]
    warmup: int = 2
    repeats: int = 5
    baseline: Attention | None = None
    decoders: tuple[Decoder, ...] = ()  # --decoders: each configuration once per decoding loop; () the base's

    def __post_init__(self) -> None:
        if self.base.vad is None and self.base.chunking != Chunking.VAD:
            # bench measures the model's configurations on fixed work: a VAD in front (transcribe's default) would
            # make that work depend on the audio. ``--vad silero`` puts it in the measurement.
            object.__setattr__(self, "base", self.base.replace(vad=Vad.NONE))
        if self.warmup < 0 or self.repeats < 1:
            raise UsageError("--warmup must be ≥ 0 and --repeats ≥ 1.")
        if not self.decoders:
            object.__setattr__(self, "decoders", (self.base.decoder,))
        for name in ("models", "attentions", "dtypes", "quantizations", "batch_sizes"):
            if not getattr(self, name):
                raise UsageError(f"bench: the {name.replace('_', ' ')} axis is empty.")
        if self.baseline is not None and self.baseline not in self.attentions:
            raise UsageError(f"--baseline {self.baseline.value} is not among --compare ({', '.join(a.value for a in self.attentions)}).")
        for config in self.configs():  # every combination validated before anything loads
            config.replace(batch_size=max(self.batch_sizes))

    @property
    def baseline_attention(self) -> Attention:
        return self.baseline or self.attentions[0]

    def configs(self) -> list[EngineConfig]:
        return [
            self.base.replace(model=m, dtype=d, quantization=q, attention=a, decoder=dec)
            for m in self.models for d in self.dtypes for q in self.quantizations for a in self.attentions
            for dec in self.decoders
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base.to_dict(), "models": list(self.models), "attentions": [a.value for a in self.attentions],
            "dtypes": [d.value for d in self.dtypes], "quantizations": [q.value for q in self.quantizations],
            "batch_sizes": list(self.batch_sizes), "warmup": self.warmup, "repeats": self.repeats,
            "baseline": self.baseline_attention.value, "decoders": [d.value for d in self.decoders],
        }


@dataclasses.dataclass(frozen=True)
class BenchRequest:
    """What a ``bench`` run was asked for: its flags over its preset's ``[engine]`` and ``[bench]`` tables, merged
    once (:meth:`from_sources`) into the matrix (:attr:`spec`), the engines comparison's inputs and the rest."""

    spec: BenchSpec
    engine_settings: dict[str, Any]  # [engine] keys and engine flags, merged (what --engines runs everywhere)
    engines: str | None  # --engines, or None: whisperctl's matrix
    axes: dict[str, Any]  # the axes given (flag or preset), for --engines, which runs one configuration
    bench_only: dict[str, Any]  # --weights, --decode-tokens, --baseline as given (--engines refuses some)
    audio: list[str]
    manifest: str | None
    duration: float | None

    @classmethod
    def from_sources(cls, flags: Mapping[str, Any], engine_flags: Mapping[str, Any],
                     preset: Mapping[str, Mapping[str, Any]] | None = None) -> "BenchRequest":
        """``flags``: bench's own flags by preset key (None: not given); ``engine_flags``: the engine options
        given; ``preset``: a loaded ``--config`` (``{"engine": …, "bench": …}``). A flag wins over the preset."""
        preset_engine = dict((preset or {}).get("engine", {}))
        table = dict((preset or {}).get("bench", {}))

        def pick(key: str, default: Any = None) -> Any:
            value = flags.get(key)
            return value if value is not None else table.get(key, default)

        overrides = dict(engine_flags)
        if "chunking" not in overrides and "chunking" not in preset_engine:
            # bench measures configurations on fixed work: batched windows fill --batch-sizes whatever the input
            # (sequential decoding batches only across files, so one file would run one window at a time)
            overrides["chunking"] = "batched"
        if pick("weights"):
            overrides["weights"] = pick("weights")
        if pick("decode_tokens") is not None:  # 0 is refused by RunControl, not ignored
            overrides["decode_tokens"] = pick("decode_tokens")
        base = EngineConfig.from_mapping({**preset_engine, **overrides})
        spec = BenchSpec(
            base=base,
            models=parse_list(pick("models", base.model), str, "--models"),
            attentions=parse_list(pick("compare", "sdpa"), Attention, "--compare"),
            dtypes=parse_list(pick("dtypes", base.dtype.value), DType, "--dtypes"),
            quantizations=parse_list(pick("quantize", base.quantization.value), Quantization, "--quantize"),
            batch_sizes=parse_list(str(pick("batch_sizes", base.batch_size)), int, "--batch-sizes"),
            warmup=_count(pick("warmup", 2), "--warmup", 0),
            repeats=_count(pick("repeats", 5), "--repeats", 1),
            baseline=parse_list(pick("baseline"), Attention, "--baseline")[0] if pick("baseline") else None,
            decoders=parse_list(pick("decoders", base.decoder.value), Decoder, "--decoders"),
        )
        axes = {"model": pick("models"), "attention": pick("compare"), "dtype": pick("dtypes"),
                "quantization": pick("quantize"), "batch_size": pick("batch_sizes")}
        bench_only = {"--weights": pick("weights"), "--decode-tokens": pick("decode_tokens"), "--baseline": pick("baseline")}
        return cls(spec, {**preset_engine, **overrides}, pick("engines"), axes, bench_only,
                   list(flags.get("audio") or table.get("audio", [])), pick("manifest"), pick("duration"))


def _count(value: Any, flag: str, minimum: int, maximum: int = 1000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise UsageError(f"{flag}: must be an integer in [{minimum}, {maximum}], got {value!r}.")
    return value


def parse_list(text: str | Sequence[str] | None, kind: Any, option: str) -> tuple:
    if text is None:
        return ()
    if not isinstance(text, (str, list, tuple)):
        text = str(text)  # a TOML number: batch_sizes = 8
    items = [str(t).strip() for t in (text.split(",") if isinstance(text, str) else text) if str(t).strip()]
    if kind is int:
        out = []
        for item in items:
            try:
                out.append(int(item))
            except ValueError:
                raise UsageError(f"{option}: '{item}' is not an integer.") from None
            if not 1 <= out[-1] <= MAX_BATCH_SIZE:
                raise UsageError(f"{option}: batch sizes must be in [1, {MAX_BATCH_SIZE}], got {item}.")
        return tuple(out)
    if kind is str:
        return tuple(items)
    return tuple(dict.fromkeys(parse_choice(kind, item, option) for item in items))


@dataclasses.dataclass
class BenchInput:
    name: str
    samples: np.ndarray
    reference: str | None = None

    @property
    def duration(self) -> float:
        return len(self.samples) / audio_mod.SAMPLE_RATE


def default_audio() -> Path:
    """The example clip shipped inside the package (the same speech as examples/short.wav)."""
    return Path(__file__).resolve().parents[1] / "data" / "example.flac"


def _load(path: Any, option: str) -> np.ndarray:
    """A benchmark input, read before anything runs: one that cannot be read is a usage error naming the option."""
    try:
        return audio_mod.load(path)
    except WhisperctlError as exc:
        raise UsageError(f"{option} {exc}") from None


def sidecar_reference(path: Any) -> str | None:
    """The reference text of an ``--audio`` file: ``<stem>.txt`` beside it, when there is one."""
    text = Path(path).with_suffix(".txt")
    try:
        return text.read_text(encoding="utf-8").strip() if text.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--audio {path}: its reference {text.name} cannot be read as UTF-8 text: {exc}.") from None


#: --duration tiles the audio in memory: 4 hours is 0.9 GB of float32 samples. Below a second the audio is all
#: padding of one 30 s window and the RTFx rounds to 0.0: nothing is measured.
MIN_TILED_SECONDS, MAX_TILED_SECONDS = 1.0, 4 * 3600.0


def check_duration(duration: Any) -> float:
    """--duration as a finite number of seconds in [1 s, 4 h]; a usage error otherwise (NaN included)."""
    try:
        value = float(duration)
    except (TypeError, ValueError):
        raise UsageError(f"--duration: '{duration}' is not a number of seconds.") from None
    if not (MIN_TILED_SECONDS <= value <= MAX_TILED_SECONDS):  # also false for NaN
        raise UsageError(f"--duration: {duration} is outside [{MIN_TILED_SECONDS:g}, {MAX_TILED_SECONDS:g}] seconds "
                         "(under a second there is too little audio to time).")
    return value


def load_inputs(audio: Sequence[str] = (), manifest: str | None = None, duration: float | None = None) -> list[BenchInput]:
    """Audio files/directories and/or a manifest (file + reference columns); optionally tiled to ``duration`` s."""
    inputs: list[BenchInput] = []
    if manifest:
        mpath = Path(manifest)
        try:
            with mpath.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh, delimiter="\t"))
        except UnicodeDecodeError as exc:
            raise UsageError(f"--manifest {manifest}: not UTF-8 text (byte {exc.start}); save it as UTF-8.") from None
        except (OSError, csv.Error) as exc:
            raise UsageError(f"--manifest {manifest}: cannot read: {getattr(exc, 'strerror', None) or exc}.") from None
        if not rows or not {"file", "reference_text"} <= set(rows[0]):
            raise UsageError(f"--manifest {manifest}: needs tab-separated 'file' and 'reference_text' columns.")
        if any(not row.get("file") or row.get("reference_text") is None for row in rows):
            raise UsageError(f"--manifest {manifest}: a row lacks its file or reference_text.")
        for row in rows:
            path = mpath.parent / row["file"]
            if "concat" in row["file"]:
                continue  # a concatenation of other rows would count the same speech twice
            inputs.append(BenchInput(row["file"], _load(path, "--manifest"), row["reference_text"]))
    files, problems = expand_inputs(list(audio))
    if problems:
        name, why = problems[0]
        raise UsageError(f"--audio {name}: {why}")
    for f in files:
        inputs.append(BenchInput(f, _load(f, "--audio"), sidecar_reference(f)))
    if not inputs:
        inputs.append(BenchInput(default_audio().name, audio_mod.load(default_audio())))
    if duration is not None:
        duration = check_duration(duration)
        joined = np.concatenate([i.samples for i in inputs])
        reps = int(np.ceil(duration * audio_mod.SAMPLE_RATE / len(joined)))
        tiled = np.tile(joined, reps)[: int(duration * audio_mod.SAMPLE_RATE)]
        inputs = [BenchInput(f"tiled {duration:g} s", tiled)]
    return inputs


class _PeakRSS:
    """Samples this process's resident memory every 20 ms while active; ``peak`` is the largest seen."""

    def __init__(self) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "_PeakRSS":
        self.peak = self.proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def _cuda_reset(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _row_key(row: dict[str, Any]) -> tuple:
    return (row["model"], row["dtype"], row["quantization"], row["batch_size"], row["decoder_option"])


class BenchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or the caller's SIGTERM, as ``__cause__``) stopped a benchmark: ``result`` is the self-describing
    result of what finished, with ``"partial": true`` and a row ``status: "interrupted"`` for each configuration that
    did not. A ``KeyboardInterrupt``, so a caller that does not look for it still stops."""

    def __init__(self, result: dict[str, Any]):
        super().__init__("the benchmark was interrupted")
        self.result = result


def run(
    spec: BenchSpec,
    inputs: list[BenchInput],
    env: Environment,
    on_progress: Callable[[str], None] | None = None,
    transcriber_factory: Callable[[EngineConfig, Environment], Any] | None = None,
) -> dict[str, Any]:
    """Run the matrix and return the self-describing result (see docs/bench.md for the schema). Interrupted, it
    raises :class:`BenchInterrupted` holding the rows that finished."""
    rows: list[dict[str, Any]] = []
    stopped: KeyboardInterrupt | None = None
    try:
        for row in _rows(spec, inputs, env, on_progress or (lambda msg: None), transcriber_factory):
            rows.append(row)
    except KeyboardInterrupt as exc:
        stopped = exc
        planned = [(config, bs) for config in spec.configs() for bs in spec.batch_sizes]  # one row each, in order
        rows += [{**_identity(config), "batch_size": bs, "status": INTERRUPTED} for config, bs in planned[len(rows):]]
    compare_rows(rows, spec)
    _compare_decoders(rows, spec)
    _note_cut_windows(rows, spec)
    result = {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment_summary(env) | host_summary(),
        "spec": spec.to_dict(),
        "inputs": [{"name": i.name, "duration_s": round(i.duration, 3), "has_reference": i.reference is not None} for i in inputs],
        "rows": rows,
    }
    return stop_with(result, stopped)


def stop_with(result: dict[str, Any], stopped: KeyboardInterrupt | None) -> dict[str, Any]:
    """``result``, or after an interruption :class:`BenchInterrupted` with it marked partial."""
    if stopped is None:
        return result
    result["partial"] = True
    raise BenchInterrupted(result) from stopped


def _note_cut_windows(rows: list[dict[str, Any]], spec: BenchSpec) -> None:
    """One warning for the run when windows stopped at --max-new-tokens (each batch counts them in ``cut``)."""
    cut = [r for r in rows if any(b.get("cut") for s in r.get("samples", []) for b in s["batches"])]
    if cut:
        logging.getLogger("whisperctl").warning(
            "--max-new-tokens %s: windows were cut at the limit in %d of %d row(s); their texts and WER are of "
            "incomplete text.", spec.base.max_new_tokens, len(cut), len(rows))


def _identity(config: EngineConfig) -> dict[str, Any]:
    return {"model": config.model, "attention": config.attention.value, "dtype": config.dtype.value,
            "quantization": config.quantization.value, "weights": config.weights,
            "decoder_option": config.decoder.value}  # as asked (--decoders); "decoder": what ran


def _rows(spec: BenchSpec, inputs: list[BenchInput], env: Environment, say: Callable[[str], None],
          transcriber_factory: Callable[[EngineConfig, Environment], Any] | None) -> Iterator[dict[str, Any]]:
    """One finished row per (configuration, batch size), in :meth:`BenchSpec.configs` order."""
    from ..engine import Transcriber

    factory = transcriber_factory or Transcriber
    for config in spec.configs():
        base_row = _identity(config)
        try:
            plan = make_plan(config, env)
        except EligibilityError as exc:
            reason = str(exc).split(": ", 1)[1] if ": " in str(exc) else str(exc)
            reason, _, fix = reason.partition(". Fix: ")
            for bs in spec.batch_sizes:
                yield {**base_row, "batch_size": bs, "status": f"skipped: {reason}", "fix": fix.rstrip(".")}
            say(f"{config.model} {config.attention.value} {config.dtype.value}: skipped")
            continue
        base_row["dtype"] = plan.dtype.value
        base_row["quantization"] = plan.quantization.value
        base_row["device"] = plan.device
        say(f"loading {config.model} ({config.attention.value}, {plan.dtype.value}, {config.quantization.value}, "
            f"decoder {config.decoder.value})")
        transcriber = None
        try:
            _cuda_reset(plan.device)
            transcriber = factory(config, env)
            t0 = time.perf_counter()
            transcriber.load()
            load_s = time.perf_counter() - t0
        except WhisperctlError as exc:
            for bs in spec.batch_sizes:
                yield {**base_row, "batch_size": bs, "status": f"error: {exc}"}
            continue
        for bs in spec.batch_sizes:
            row = {**base_row, "batch_size": bs, "load_s": round(load_s, 3),
                   "attention_in_effect": transcriber.runtime_info()["attention"],
                   "decoder": transcriber.runtime_info()["decoder"]}
            say(f"{config.model} {config.attention.value} {plan.dtype.value} {config.quantization.value} batch {bs}")
            try:
                row.update(measure(transcriber, config.replace(batch_size=bs), inputs, spec, plan.device))
                row["status"] = "ok"
            except OutOfMemoryError:
                row["status"] = f"OOM at batch {bs}"
            except WhisperctlError as exc:
                row["status"] = f"error: {exc}"
            yield row
        del transcriber
        _cuda_reset(plan.device)


def measure(transcriber: Any, config: EngineConfig, inputs: list[BenchInput], spec: BenchSpec, device: str) -> dict[str, Any]:
    import torch

    # The batch size changes per row through the per-call options; OOM is a row here, not a halved batch.
    options, control = config.decode_options(), config.run_control(halve_on_oom=False)
    _cuda_reset(device)
    warm = inputs[0].samples[: int(config.batch_size * config.chunk_length_s * audio_mod.SAMPLE_RATE)]
    for _ in range(spec.warmup):  # batches observed (and dropped), so windows cut at --max-new-tokens go unsaid
        _texts(transcriber.transcribe_many([("warmup", warm)], options, on_batch=lambda stats: None, control=control))
    samples: list[dict[str, Any]] = []
    texts: list[str] = []
    audio_s = sum(i.duration for i in inputs)
    with _PeakRSS() as rss:
        for repeat in range(spec.repeats):
            batches: list[dict[str, Any]] = []
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            results = list(transcriber.transcribe_many(
                [(i.name, i.samples) for i in inputs], options,
                on_batch=lambda stats: batches.append(dataclasses.asdict(stats)), control=control,
            ))
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            wall = time.perf_counter() - t0
            texts = _texts(results)
            samples.append({"repeat": repeat, "wall_s": wall, "audio_s": audio_s, "rtfx": audio_s / wall, "batches": batches})
    latencies = [b["seconds"] for s in samples for b in s["batches"]]
    tok_rates = [sum(b["tokens"] for b in s["batches"]) / max(sum(b["seconds"] for b in s["batches"]), 1e-9) for s in samples]
    enc = sum(b["encoder_s"] for s in samples for b in s["batches"])
    out: dict[str, Any] = {
        "latency_median_s": _percentile(latencies, 50),
        "latency_p90_s": _percentile(latencies, 90),
        "rtfx_median": statistics.median(s["rtfx"] for s in samples),
        "tokens_per_s": statistics.median(tok_rates),
        "encoder_share": enc / max(sum(latencies), 1e-9),
        "samples": samples,
        "config": config.to_dict(),
    }
    if device.startswith("cuda"):
        out["peak_vram_allocated_bytes"] = int(torch.cuda.max_memory_allocated(device))
        out["peak_vram_reserved_bytes"] = int(torch.cuda.max_memory_reserved(device))
    else:
        out["peak_rss_bytes"] = int(rss.peak)
    if config.weights == "pretrained":
        out["texts"] = texts
        refs = [(i.reference, t) for i, t in zip(inputs, texts) if i.reference]
        if refs:
            from ..wer import wer

            out["wer"] = wer([r for r, _ in refs], [t for _, t in refs])
    return out


def _texts(results: Iterable[tuple[Any, Any]]) -> list[str]:
    """The transcripts of a ``transcribe_many`` call; the first input's error is the row's."""
    texts = []
    for _, result in results:
        if isinstance(result, Exception):
            raise result
        texts.append(result.text)
    return texts


def compare_rows(rows: list[dict[str, Any]], spec: BenchSpec) -> None:
    """Speedup vs the baseline attention and the same-text check, within (model, dtype, quant, batch)."""
    base_name = spec.baseline_attention.value
    baselines = {_row_key(r): r for r in rows if r["attention"] == base_name and r.get("status") == "ok"}
    for row in rows:
        base = baselines.get(_row_key(row))
        if row.get("status") != "ok" or base is None:
            continue
        row["speedup"] = row["rtfx_median"] / base["rtfx_median"] if base["rtfx_median"] else None
        if row is base:
            row["same_text"] = "baseline"
        elif "texts" in row and "texts" in base:
            row["same_text"] = _text_vs_baseline(row, base["texts"])


def _compare_decoders(rows: list[dict[str, Any]], spec: BenchSpec) -> None:
    """``decoder_speedup``: RTFx over the first --decoders entry's, within (model, attention, dtype, quant, batch)."""
    if len(spec.decoders) < 2:
        return
    first = spec.decoders[0].value
    key = lambda r: (r["model"], r["attention"], r["dtype"], r["quantization"], r["batch_size"])  # noqa: E731
    baselines = {key(r): r for r in rows if r["decoder_option"] == first and r.get("status") == "ok"}
    for row in rows:
        base = baselines.get(key(row))
        if row.get("status") == "ok" and base is not None and base["rtfx_median"]:
            row["decoder_speedup"] = row["rtfx_median"] / base["rtfx_median"]


def _text_vs_baseline(row: dict[str, Any], baseline: list[str]) -> str:
    """How far this row's transcripts are from the baseline's: ``same``, or the WER between them (the baseline's
    text as the reference), also stored as ``text_wer_vs_baseline``. A count of differing files said nothing of
    whether one word or every word changed."""
    if row["texts"] == baseline:
        return "same"
    from ..wer import wer

    try:
        row["text_wer_vs_baseline"] = wer(baseline, row["texts"])
    except ValueError:  # the baseline transcribed no words at all: there is nothing to count errors against
        return "differs (baseline empty)"
    if row["text_wer_vs_baseline"] == 0:
        return "same words"  # case, punctuation or spacing only, which the WER normaliser ignores
    return f"{100 * row['text_wer_vs_baseline']:.1f} % vs base"


def host_summary() -> dict[str, Any]:
    import torch

    from ..doctor import read_cpu

    cpu_model, isa = read_cpu()
    out: dict[str, Any] = {"cpu_model": cpu_model, "cpu_isa": list(isa), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        out["cuda_device_name"] = torch.cuda.get_device_name(0)
    return out
