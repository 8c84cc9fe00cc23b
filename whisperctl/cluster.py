"""Transcribe a corpus on a Ray cluster (Ray Data), with the outputs, rules and report of a local run.

The driver (this process) expands nothing and decodes nothing: it claims every input's output names in the output
directory exactly as a local run does (:func:`whisperctl.outputs.plan_outputs`: ``--overwrite``,
``--skip-existing``, numbered stems), so the names are fixed before any worker starts. The inputs become a Ray
dataset of rows (input, claim); ``map_batches`` runs them through a pool of actors, each holding one loaded
:class:`~whisperctl.engine.Transcriber` built from the same :class:`~whisperctl.config.EngineConfig`. A worker
reads its inputs itself (the driver never touches audio), transcribes a batch of files with the engine's usual
batching across files, writes each file's outputs atomically and its ownership record, and returns one row per
file: written, or failed with the reason (a bad file is a result, not an exception, so Ray never retries it).

Fault tolerance is Ray's: an actor whose process dies is restarted and its unfinished batch is run again
(Ray Data's actor pools: ``max_restarts=-1``, ``max_task_retries=-1``). Because names are claimed up front and every file is written by
one rename, a rerun of a batch rewrites the same names with the same content: nothing is duplicated and no
half-written output is visible. The temporary ``.part`` files a killed worker leaves behind are removed at the end
(those no live writer holds the lock of).

Ray is an optional extra (``pip install 'whisperctl[ray]'``); this module imports it only when a run starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import DecodeOptions, EngineConfig, OutputFormat
from .errors import UsageError, WhisperctlError
from .outputs import Claim, output_settings, plan_outputs, remove_partial_files

INSTALL = "pip install 'whisperctl[ray]'"
FILES_PER_TASK = 4  # files per actor call: windows of several files share batches; a retry redoes at most this many


@dataclasses.dataclass
class FileOutcome:
    """One input's fate on the cluster."""

    input: str
    error: str | None  # None: every output was written
    audio_s: float = 0.0
    outputs: list[str] = dataclasses.field(default_factory=list)
    worker: str = ""  # node address and process id of the actor that finished it
    warning: str | None = None  # what in the transcript is suspect (whisperctl.transcript.warning_summary)


@dataclasses.dataclass
class CorpusReport:
    """What :func:`transcribe_corpus` did: per-file outcomes, inputs skipped and refused before any work."""

    outcomes: list[FileOutcome]
    skipped: int
    problems: list[tuple[str, str]]  # (input, reason) refused by the output rules, before the cluster ran
    workers: int = 0
    wall_s: float = 0.0

    @property
    def failures(self) -> list[tuple[str, str]]:
        return self.problems + [(o.input, o.error) for o in self.outcomes if o.error is not None]

    @property
    def done(self) -> list[FileOutcome]:
        return [o for o in self.outcomes if o.error is None]


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UsageError(f"--ray needs Ray: {INSTALL}") from None
    return ray


def transcribe_corpus(
    inputs: Sequence[str], output_dir: str | Path, config: EngineConfig | None = None,
    formats: Sequence[OutputFormat] = (OutputFormat.TXT,), *, options: DecodeOptions | None = None,
    overwrite: bool = False, skip_existing: bool = False, address: str = "auto", workers: int | None = None,
    cpus_per_worker: float | None = None, gpus_per_worker: float = 0.0, files_per_task: int = FILES_PER_TASK,
    on_file: Callable[[FileOutcome], None] | None = None, on_start: Callable[[dict[str, Claim]], None] | None = None,
) -> CorpusReport:
    """Transcribe audio files (paths) on Ray into ``output_dir``: the library form of ``transcribe --ray``.

    ``address``: ``auto`` (what ``ray.init()`` finds: ``RAY_ADDRESS``, else a cluster this machine joined with
    ``ray start``, else a new local one for this run) or a cluster
    address (``ray://host:10001``, ``host:6379``); an already initialised Ray is used as it is. ``workers``: actors,
    each with one loaded model (default: as many as the cluster's GPUs or CPUs hold at ``gpus_per_worker`` /
    ``cpus_per_worker``); ``cpus_per_worker`` defaults to 1 (and sets torch's threads unless the config does).
    ``on_file`` is called in the driver as each file's outcome arrives (progress); ``on_start`` with the claims of
    the inputs to transcribe (not skipped or refused) before the cluster runs: what an interruption may leave
    unfinished (:meth:`~whisperctl.outputs.Claim.done_now` tells, outcomes arrive per task of several files)."""
    config = config or EngineConfig()
    formats = list(formats)
    _check_resources(workers, cpus_per_worker, gpus_per_worker, files_per_task)
    names = list(dict.fromkeys(str(x) for x in inputs))  # an input named twice is transcribed once
    if "-" in names:
        raise UsageError("--ray reads files on the workers; standard input ('-') cannot be sent there.")
    started = time.perf_counter()
    plan = plan_outputs(names, Path(output_dir), formats, overwrite=overwrite, skip_existing=skip_existing,
                        settings=output_settings(config, options))
    report = CorpusReport([], plan.skipped, plan.problems)
    if not plan.todo:
        return report  # nothing to do: the cluster is not even contacted
    if on_start is not None:
        on_start(dict(plan.claims))
    ray = require_ray()
    _connect(ray, address)
    cpus = 1.0 if cpus_per_worker is None else cpus_per_worker
    # no more actors than tasks: Ray Data warns (on stderr) about actors that could never get one
    count = min(workers or _fitting_workers(ray, cpus, gpus_per_worker), math.ceil(len(plan.todo) / files_per_task))
    report.workers = count
    try:
        for outcome in _run(plan.claims, config, options, formats, count, cpus, gpus_per_worker, files_per_task):
            report.outcomes.append(outcome)
            if on_file is not None:
                on_file(outcome)
    finally:
        remove_partial_files(plan.claims.values())  # a killed worker's (no live writer holds their lock)
    report.wall_s = time.perf_counter() - started
    return report


def _check_resources(workers, cpus, gpus, files_per_task) -> None:
    if workers is not None and not 1 <= workers <= 100_000:
        raise UsageError(f"--workers {workers}: give 1 or more.")
    if cpus is not None and not 0 < cpus <= 1024:
        raise UsageError(f"--cpus-per-worker {cpus}: give a number above 0 (fractions allowed).")
    if not 0 <= gpus <= 64:
        raise UsageError(f"--gpus-per-worker {gpus}: give 0 (CPU workers) or a positive number (fractions allowed).")
    if gpus > 1 and gpus != int(gpus):
        raise UsageError(f"--gpus-per-worker {gpus}: above 1, Ray needs a whole number of GPUs.")
    if not 1 <= files_per_task <= 10_000:
        raise UsageError(f"files per task {files_per_task}: give 1 or more.")


def _connect(ray: Any, address: str) -> None:
    if ray.is_initialized():
        return
    # the driver's core worker logs to stderr (e.g. that actors with restarts keep their constructor arguments in
    # the object store, which is how Ray Data builds them): only fatal messages, unless the user asks otherwise
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                                  configure_logging=True)
    # ray.init replaces the SIGTERM handler (its own exits 15, after its C++ core printed a stack trace): keep the
    # caller's, so a terminated --ray run stops as a local run does (the CLI's: partial outputs removed, exit 143)
    previous = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    try:
        with _native_stderr_quiet():
            if address == "auto":
                ray.init(**kwargs)  # RAY_ADDRESS, else the cluster `ray start` made here, else a new local one
            else:
                ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise WhisperctlError(f"--ray {address}: cannot reach a Ray cluster: {str(exc).splitlines()[0]}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _native_stderr_quiet():
    """File descriptor 2 to /dev/null while Ray's C++ core starts in this process: it prints "Set ray log level from
    environment variable RAY_BACKEND_LOG_LEVEL …" there whatever the level (errors still raise; with
    WHISPERCTL_DEBUG=1 nothing is hidden)."""
    if os.environ.get("WHISPERCTL_DEBUG"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fitting_workers(ray: Any, cpus: float, gpus: float) -> int:
    resources = ray.cluster_resources()
    if gpus > 0:
        have = resources.get("GPU", 0.0)
        if have < gpus:
            raise UsageError(f"--gpus-per-worker {gpus}: the Ray cluster has {have:g} GPU(s).")
        return max(1, int(have // gpus))
    return max(1, int(resources.get("CPU", 1.0) // cpus))


def _run(claims: dict[str, Claim], config: EngineConfig, options: DecodeOptions | None, formats: list[OutputFormat],
         workers: int, cpus: float, gpus: float, files_per_task: int):
    """Outcomes as the workers finish them (order not kept)."""
    import logging

    import ray.data

    for name in ("ray.data", "ray"):  # whisperctl shows its own progress and errors
        logging.getLogger(name).setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    rows = [{"input": name, "claim": _claim_to_row(claim)} for name, claim in claims.items()]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / files_per_task)))
    results = dataset.map_batches(
        _Worker, fn_constructor_kwargs=dict(config=config, options=options, formats=formats, cpus=cpus),
        batch_size=files_per_task, batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus, num_gpus=gpus or None,
    )  # Ray Data's actor pools restart a dead actor and retry its tasks by default (max_restarts=-1,
    # max_task_retries=-1; ActorPoolMapOperator._apply_default_remote_args): that is the fault tolerance relied on
    for batch in results.iter_batches(batch_size=None, batch_format="pandas"):
        for row in batch.to_dict("records"):
            name, error = row["input"], row["error"] or None
            yield FileOutcome(input=name, error=error, audio_s=float(row["audio_s"]), worker=row["worker"],
                              outputs=[] if error else [str(p) for p in claims[name].paths],
                              warning=row.get("warning") or None)


class _Worker:
    """A Ray Data actor: one loaded model, transcribing batches of (input, claim) rows into their outputs."""

    def __init__(self, config: EngineConfig, options: DecodeOptions | None, formats: list[OutputFormat], cpus: float):
        from .engine import Transcriber

        if config.threads is None:  # torch's threads: the worker's CPUs (validated here, on the worker's node)
            config = config.replace(threads=max(1, min(math.floor(cpus), os.cpu_count() or 1)))
        self.transcriber = Transcriber(config)
        self.transcriber.loaded  # load now: a worker that cannot load fails at start, not per batch
        self.options, self.formats = options, formats
        self.name = f"{_node()} pid {os.getpid()}"

    def __call__(self, batch: Any) -> Any:
        import pandas as pd

        from .outputs import write_outputs
        from .transcript import FileDone, warning_summary

        claims = {name: _claim_from_row(row) for name, row in zip(batch["input"], batch["claim"])}
        out: dict[str, tuple[str, float] | None] = dict.fromkeys(claims)  # (error, audio seconds) once decided
        warnings: dict[str, str] = {}
        failure: WhisperctlError | None = None
        try:
            for event in self.transcriber.events(list(claims), options=self.options):
                if not isinstance(event, FileDone):
                    continue
                name, result = event.source.name, event.result
                if isinstance(result, WhisperctlError):
                    out[name] = (_reason(name, result), 0.0)
                    continue
                try:
                    write_outputs(claims[name], self.formats, result)
                except WhisperctlError as exc:
                    out[name] = (_reason(name, exc), 0.0)
                    continue
                out[name] = ("", float(result.duration))
                warnings[name] = warning_summary(result) or ""
        except WhisperctlError as exc:  # the batch as a whole (a usage or model problem)
            failure = exc
        for name, decided in out.items():
            if decided is None:  # not done when the batch failed
                out[name] = (_reason(name, failure) if failure else "the engine returned no result", 0.0)
        names = list(out)
        return pd.DataFrame({
            "input": names, "error": [out[n][0] for n in names], "audio_s": [out[n][1] for n in names],
            "worker": [self.name] * len(names), "warning": [warnings.get(n, "") for n in names],
        })


def _reason(name: str, exc: BaseException) -> str:
    text = str(exc)
    return text[len(name) + 2:] if text.startswith(name + ": ") else text


def _node() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        return "?"


def _claim_to_row(claim: Claim) -> dict[str, Any]:
    import json

    return {"stem": claim.stem, "paths": [str(p) for p in claim.paths], "record": str(claim.record),
            "identity": json.dumps(claim.identity), "previous": json.dumps(claim.previous),
            "settings": json.dumps(claim.settings), "keep": sorted(claim.keep)}


def _claim_from_row(row: dict[str, Any]) -> Claim:
    import json

    return Claim(stem=row["stem"], paths=tuple(Path(p) for p in row["paths"]), record=Path(row["record"]),
                 identity=json.loads(row["identity"]), previous=json.loads(row["previous"]),
                 settings=json.loads(row["settings"]), keep=frozenset(row["keep"]))
