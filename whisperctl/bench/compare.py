"""``bench --engines``: whisperctl against other Whisper engines, each in its own process, on the same inputs.

Method: the inputs are decoded once, by the parent, to 16 kHz mono float32 and saved as ``.npy`` files every
engine reads (decoding and resampling are out of the comparison). Each repeat runs every engine once, in a fresh
process (:mod:`whisperctl.bench.child`), in the listed order on even repeats and reversed on odd ones (A B C,
C B A, …) so no engine always runs first on a cold cache or last on a hot CPU. Each row reports medians over the
repeats; the texts are the last repeat's. Every engine gets the same model weights, device, threads, dtype, beam
size and language (:class:`~.engines.EngineRequest`); each row says what the engine actually ran. Neither the
engines' processes nor the saved inputs outlive the run, however it ends (:mod:`whisperctl.bench.processes`).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import EngineConfig
from ..eligibility import Environment, environment_summary, make_plan
from ..errors import EligibilityError, UsageError
from . import processes
from .engines import EngineRequest, check_model, parse_engines, registry
from .report import INTERRUPTED
from .runner import SCHEMA, BenchInput, stop_with

#: words listed per worst file in the table (the JSON has them all)
_DROPPED_SHOWN = 6


@dataclasses.dataclass(frozen=True)
class EngineBench:
    """One engine comparison: which engines, asked for what, how many times."""

    engines: tuple[str, ...]
    request: EngineRequest
    base: EngineConfig  # the whisperctl engine's configuration (the flags given over the defaults)
    skipped: tuple[tuple[str, str], ...] = ()  # (engine, why) for ``--engines all`` on a machine without some
    warmup: int = 2
    repeats: int = 5

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeats < 1:
            raise UsageError("--warmup must be ≥ 0 and --repeats ≥ 1.")
        if not self.engines:
            raise UsageError("--engines: none of them can run here: " + "; ".join(f"{n}: {w}" for n, w in self.skipped))

    def to_dict(self) -> dict[str, Any]:
        return {"engines": list(self.engines), "skipped_engines": dict(self.skipped), "request": dataclasses.asdict(self.request),
                "base": self.base.to_dict(), "warmup": self.warmup, "repeats": self.repeats, "baseline": self.engines[0]}


def plan(engines: str, config: dict[str, Any], env: Environment, warmup: int = 2, repeats: int = 5) -> EngineBench:
    """Validate ``--engines`` and the engine flags, resolve device/dtype/attention/threads: all before any run.

    ``config``: the EngineConfig fields the user gave (flags and ``--config``); the whisperctl engine runs exactly
    them, the other engines their shared subset."""
    names, skipped = parse_engines(engines)
    base = EngineConfig.from_mapping(config)
    try:
        resolved = make_plan(base, env)
    except EligibilityError as exc:
        raise UsageError(str(exc)) from None
    check_model(names, base.model)
    threads = base.threads
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    request = EngineRequest(
        model=base.model, device=resolved.device, threads=threads, dtype=resolved.dtype.value,
        quantization=resolved.quantization.value, attention=resolved.attention.value, beam_size=base.beam_size,
        language=base.language, batch_size=base.batch_size if "batch_size" in config else None,
        vad=base.vad.value if "vad" in config and base.vad is not None else None,
        whisperctl_config={k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()},
    )
    return EngineBench(tuple(names), request, base, tuple(skipped.items()), warmup, repeats)


def _child_env(request: EngineRequest) -> dict[str, str]:
    """The child imports this very whisperctl, and every OpenMP runtime gets the requested threads."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = str(request.threads)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def _spawn(name: str, bench: EngineBench, inputs: list[dict[str, Any]], scratch: Path, tag: str) -> dict[str, Any]:
    spec_path, result_path, log_path = scratch / f"{tag}.spec.json", scratch / f"{tag}.result.json", scratch / f"{tag}.log"
    spec = {"engine": name, "request": dataclasses.asdict(bench.request), "inputs": inputs, "warmup": bench.warmup,
            "result": str(result_path), "parent_pid": os.getpid()}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    with log_path.open("wb") as log:
        returncode = processes.run_child([sys.executable, "-m", "whisperctl.bench.child", str(spec_path)], log,
                                         _child_env(bench.request))
    try:
        result = json.loads(result_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
        result = {"error": f"the {name} process exited with {returncode}: {' / '.join(tail) or 'no output'}"}
    return result


def run(bench: EngineBench, inputs: list[BenchInput], env: Environment, on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the comparison and return the self-describing result (docs/bench.md, "--engines"). Interrupted, it
    raises :class:`~.runner.BenchInterrupted` holding what finished."""
    say = on_progress or (lambda msg: None)
    samples: dict[str, list[dict[str, Any]]] = {n: [] for n in bench.engines}
    failed: dict[str, str] = {}
    stopped: KeyboardInterrupt | None = None
    with processes.scratch() as scratch:
        files = []
        try:
            for i, item in enumerate(inputs):
                path = scratch / f"input-{i}.npy"
                np.save(path, np.ascontiguousarray(item.samples, dtype=np.float32))
                files.append({"name": item.name, "path": str(path)})
            for repeat in range(bench.repeats):
                order = list(bench.engines) if repeat % 2 == 0 else list(reversed(bench.engines))
                for position, name in enumerate(order):
                    if name in failed:
                        continue
                    say(f"repeat {repeat + 1}/{bench.repeats}: {name}")
                    result = _spawn(name, bench, files, scratch, f"{repeat}-{position}")
                    if "error" in result:
                        failed[name] = result["error"]
                        continue
                    samples[name].append({**result, "repeat": repeat, "position": position})
        except KeyboardInterrupt as exc:
            stopped = exc
    audio_s = sum(i.duration for i in inputs)
    rows = [_row(n, samples[n], failed.get(n), inputs, audio_s, bench) for n in bench.engines]
    rows += [{"engine": n, "model": bench.base.model, "status": f"skipped: {why}"} for n, why in bench.skipped]
    _speedups(rows)
    engines = registry()
    environment = environment_summary(env) | _host_summary(bench.request)
    environment["engines"] = {n: engines[n].version() for n in bench.engines}
    return stop_with({
        "schema": SCHEMA, "kind": "engines",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment, "spec": bench.to_dict(),
        "inputs": [{"name": i.name, "duration_s": round(i.duration, 3), "has_reference": i.reference is not None} for i in inputs],
        "rows": rows,
    }, stopped)


def _host_summary(request: EngineRequest) -> dict[str, Any]:
    from .runner import host_summary as host

    return host() | {"torch_threads": request.threads}


def describe(ran: dict[str, Any]) -> str:
    """What an engine ran, in one cell: compute type, attention, batch, chunking, VAD, beam."""
    parts = [ran.get("compute"), ran.get("attention"), f"batch {ran.get('batch')}", ran.get("chunking"),
             f"VAD {ran.get('vad')}", f"beam {ran.get('beam')}"]
    if ran.get("inputs") == "together":
        parts.append("inputs together")
    if not ran.get("fallback"):
        parts.append("no fallback")
    return ", ".join(str(p) for p in parts if p is not None)


def _row(name: str, runs: list[dict[str, Any]], error: str | None, inputs: list[BenchInput], audio_s: float,
         bench: EngineBench) -> dict[str, Any]:
    """One engine's row; ``error``: why its runs stopped (None with fewer runs than repeats: interrupted)."""
    row: dict[str, Any] = {"engine": name, "model": bench.request.model, "device": bench.request.device,
                           "threads": bench.request.threads}
    then = f"error: {error}" if error is not None else INTERRUPTED
    if not runs:
        row["status"] = then
        return row
    last = runs[-1]
    ran = last["ran"]
    median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
    row.update({
        "status": "ok" if len(runs) == bench.repeats else f"ok ({len(runs)}/{bench.repeats} repeats; then {then})",
        "version": last.get("version"), "ran": ran, "ran_summary": describe(ran),
        "attention": ran.get("attention"), "dtype": ran.get("compute"), "batch_size": ran.get("batch"),
        "imports_s": median("imports_s"), "load_s": median("load_s"), "wall_s": median("wall_s"),
        "rtfx_median": statistics.median(audio_s / r["wall_s"] for r in runs),
        "rtfx_with_load_median": statistics.median(audio_s / (r["imports_s"] + r["load_s"] + r["wall_s"]) for r in runs),
        "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
        "samples": [{"repeat": r["repeat"], "position": r["position"], "imports_s": r["imports_s"], "load_s": r["load_s"],
                     "wall_s": r["wall_s"], "audio_s": audio_s, "rtfx": audio_s / r["wall_s"],
                     "per_file_s": r["per_file_s"], "peak_rss_bytes": r["peak_rss_bytes"],
                     **({"peak_vram_bytes": r["peak_vram_bytes"]} if "peak_vram_bytes" in r else {})} for r in runs],
        "texts": last["texts"],
    })
    if "peak_vram_bytes" in last:
        row["peak_vram_bytes"] = max(r["peak_vram_bytes"] for r in runs)
        row["vram_source"] = last["vram_source"]
    row.update(score(inputs, last["texts"]))
    return row


def score(inputs: list[BenchInput], texts: list[str]) -> dict[str, Any]:
    """WER per file and in total (inputs with a reference), and the words dropped at the worst file."""
    scored = [(i, t) for i, t in zip(inputs, texts) if i.reference]
    if not scored:
        return {}
    from ..wer import dropped_words, wer

    files = []
    for item, text in scored:
        try:
            file_wer = wer([item.reference], [text])
        except ValueError:  # an empty reference: nothing to score
            continue
        files.append({"name": item.name, "wer": file_wer, "dropped": dropped_words(item.reference, text)})
    if not files:
        return {}
    worst = max(files, key=lambda f: (f["wer"], len(f["dropped"])))
    shown = " ".join(worst["dropped"][:_DROPPED_SHOWN]) + (" …" if len(worst["dropped"]) > _DROPPED_SHOWN else "")
    summary = f"{Path(worst['name']).name} {100 * worst['wer']:.1f} %" + (f", dropped: {shown}" if worst["dropped"] else "")
    return {"wer": wer([i.reference for i, _ in scored], [t for _, t in scored]), "files": files,
            "worst_file": worst["name"], "worst_file_summary": summary}


def _speedups(rows: list[dict[str, Any]]) -> None:
    """RTFx of each row over the first engine's (the baseline), when both ran."""
    ok = [r for r in rows if r.get("rtfx_median")]
    if not ok or ok[0] is not rows[0]:
        return
    for row in ok:
        row["speedup"] = row["rtfx_median"] / rows[0]["rtfx_median"]
