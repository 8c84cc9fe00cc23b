"""The server's engine: one loaded model, every request's windows decoded in shared batches.

:class:`Batcher` holds the :class:`~whisperctl.engine.Transcriber` and runs :meth:`Transcriber.events` on a *live*
:class:`~whisperctl.runners.Intake` (the same loop the CLI and the Ray workers drive on a fixed list): a request
becomes an input put into the intake, joins the running batch at the next window, and gets its events (segments as
they settle, then its ``FileDone``) through :attr:`Job.deliver`. The sequential runner's shared lane book is fair:
a long upload cut into sections takes every lane only while nobody else waits.

Requests whose decoding options differ (word timestamps, translation, another temperature or beam size) cannot
share one decoding pass; each set of options is a *group* with its own intake and thread, and every group's
batches are decoded by one :class:`ModelThread`, first come first served, so the model runs one batch at a time.
Requests with the same options (the common case: every client on the defaults) share batches. A request's
language and initial prompt are its own inside a group (per window and per lane).
Batched chunking (``chunking=batched|vad``) batches within a request: such a group runs its requests one by one.

No HTTP here (:mod:`whisperctl.serve.app` is the web part): tests drive a Batcher directly as well.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from ..config import Chunking, DecodeOptions
from ..errors import WhisperctlError
from ..inputs import AudioInput
from ..runners import Cancelled, Intake
from ..transcript import Event, FileDone

log = logging.getLogger(__name__)

#: groups kept with no request in them (their threads wait on an empty intake); more are closed when idle
IDLE_GROUPS_KEPT = 4


class Busy(WhisperctlError):
    """Every slot is taken: the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class ModelThread:
    """The one thread that runs the model: the groups hand it each batch's decode (:meth:`call`, first come first
    served) and :meth:`run` executes them, on the thread that calls it (``whisperctl serve``: the main thread, the
    web server runs beside it).

    Why one thread, and that one: PyTorch's CPU kernels run on OpenMP, and once the main thread has run an OpenMP
    region, decoding on another thread was 1.5-1.9x slower here (a 13 s clip: 0.64 s on the main thread, 1.15-1.44 s
    on a second one after the main thread ran one matrix product; libgomp gives each master thread its own team).
    The server's first measurements (each request 1.7x its in-process time) came from this."""

    def __init__(self) -> None:
        self._work: queue.Queue = queue.Queue()
        self._owner: int | None = None

    def call(self, work: Callable[[], Any]) -> Any:
        """``work()`` run on the model's thread; its result or its exception, here."""
        if threading.get_ident() == self._owner:
            return work()
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._work.put((work, future))
        return future.result()

    def run(self, until: Callable[[], bool], poll_s: float = 0.1) -> None:
        """Execute what the groups hand over until ``until()`` is true (checked at least every ``poll_s``)."""
        self._owner = threading.get_ident()
        try:
            while not until():
                try:
                    work, future = self._work.get(timeout=poll_s)
                except queue.Empty:
                    continue
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(work())
                except BaseException as exc:  # noqa: BLE001 - handed back to the group that asked
                    future.set_exception(exc)
        finally:
            self._owner = None


@dataclasses.dataclass(eq=False)
class Job:
    """One request's transcription: its audio, options, initial prompt, and where its events go (``deliver`` is
    called on a group's thread; the web part hands them to its event loop)."""

    source: AudioInput
    samples: np.ndarray
    options: DecodeOptions
    prompt: str | None
    deliver: Callable[[Event], None]
    submitted: float = dataclasses.field(default_factory=time.monotonic)
    group: "_Group | None" = None
    ended: bool = False


class Batcher:
    """Requests in, events out, one model. ``max_in_flight``: requests admitted at once (decoding or waiting);
    :meth:`reserve` refuses more with :class:`Busy`. ``on_batch(windows)``: told each batch's size (metrics)."""

    def __init__(self, transcriber: Any, max_in_flight: int, on_batch: Callable[[int], None] | None = None,
                 model_thread: ModelThread | None = None):
        self.transcriber = transcriber
        self.max_in_flight = max(1, max_in_flight)
        self._on_batch = on_batch
        # None: each group decodes on its own thread, one batch at a time through a lock
        self.model_thread = model_thread
        self._lock_model = threading.Lock()
        self._lock = threading.Lock()
        self._groups: dict[DecodeOptions, _Group] = {}
        self._jobs: dict[AudioInput, Job] = {}
        self._reserved = 0
        self._ids = itertools.count(1)
        self._closed = False
        self.recent_latency_s = 1.0  # smoothed request latency: what a refused client is told to wait

    # ------------------------------------------------------------------ admission
    def reserve(self) -> Callable[[], None]:
        """A slot for one request, held from its arrival (upload, audio decoding) to its response; returns the
        release (idempotent). Raises :class:`Busy` when every slot is taken or the server is closing."""
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down", 1)
            if self._reserved >= self.max_in_flight:
                wait = max(1, round(self.recent_latency_s))
                raise Busy(f"the server is busy: {self._reserved} request(s) in flight, the most it admits "
                           f"(--max-queue); retry in {wait} s", wait)
            self._reserved += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self._reserved -= 1

        return release

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._reserved

    @property
    def queued(self) -> int:
        """Requests submitted and not yet taken by their group's runner."""
        with self._lock:
            return sum(group.intake.waiting for group in self._groups.values())

    def name(self, filename: str) -> AudioInput:
        """A unique input for a request (its number and the client's file name; never a server path)."""
        return AudioInput(f"request {next(self._ids)} ({filename})", None)

    def submit(self, job: Job) -> None:
        """Put ``job`` into its options' group; its events go to ``job.deliver``. Checks the options first
        (a :class:`~whisperctl.errors.UsageError` for ones this model cannot honour)."""
        self.transcriber.check(job.options)
        key = job.options
        with self._lock:
            if self._closed:
                raise Busy("the server is shutting down", 1)
            group = self._groups.get(key)
            if group is None:
                group = self._groups[key] = _Group(self, key)
            job.group = group
            self._jobs[job.source] = job
            group.jobs += 1
            group.intake.put((job.source, job.samples))

    def cancel(self, job: Job) -> None:
        """The client went away: the job's lanes are freed at the next batch; it gets no more events."""
        with self._lock:
            if job.ended or job.group is None:
                return
            job.ended = True
            self._jobs.pop(job.source, None)
            group = job.group
            group.jobs -= 1
        if group.intake.cancel(job.source):
            log.debug("%s: cancelled before it started", job.source.name)

    def close(self, timeout: float | None = None) -> None:
        """Refuse new requests, let the groups finish what they hold, and stop their threads."""
        with self._lock:
            self._closed = True
            groups = list(self._groups.values())
        for group in groups:
            group.intake.close()
        for group in groups:
            group.thread.join(timeout)

    # ------------------------------------------------------------------ the groups' side
    def _dispatch(self, event: Event) -> None:
        with self._lock:
            job = self._jobs.get(event.source)
            if job is None:  # cancelled: its remaining events go nowhere
                return
            if isinstance(event, FileDone):
                job.ended = True
                del self._jobs[event.source]
                group = job.group
                group.jobs -= 1
                latency = time.monotonic() - job.submitted
                self.recent_latency_s = 0.8 * self.recent_latency_s + 0.2 * latency
                idle = [k for k, g in self._groups.items() if not g.jobs and not g.intake.waiting]
                stale = idle[: max(0, len(idle) - IDLE_GROUPS_KEPT)]
                closing = [self._groups.pop(k) for k in stale]
            else:
                closing = []
        job.deliver(event)
        for old in closing:
            old.intake.close()

    def _decode_call(self, work: Callable[[], Any]) -> Any:
        if self.model_thread is not None:
            return self.model_thread.call(work)
        with self._lock_model:
            return work()

    def _fail_group(self, group: "_Group", exc: WhisperctlError) -> None:
        """The group's run stopped on an error: each of its jobs ends with it (the server goes on)."""
        with self._lock:
            jobs = [job for job in self._jobs.values() if job.group is group]
        for job in jobs:
            self._dispatch(FileDone(job.source, exc))


class _Group:
    """The requests of one set of decoding options: a live intake and the thread that runs it."""

    def __init__(self, batcher: Batcher, options: DecodeOptions):
        self.batcher, self.options = batcher, options
        self.intake = Intake(live=True)
        self.jobs = 0  # submitted and not ended
        self.thread = threading.Thread(target=self._run, name=f"whisperctl-group-{id(self):x}", daemon=True)
        self.thread.start()

    def _prompt(self, source: AudioInput) -> str | None:
        job = self.batcher._jobs.get(source)
        return job.prompt if job is not None else None

    def _events(self, inputs: Any) -> Iterator[Event]:
        on_batch = self.batcher._on_batch
        return self.batcher.transcriber.events(
            inputs, self.options, on_batch=(lambda stats: on_batch(stats.size)) if on_batch else None,
            prompts=self._prompt, call=self.batcher._decode_call)

    def _run(self) -> None:
        while not self.intake.exhausted:
            try:
                if self.options.chunking == Chunking.SEQUENTIAL:
                    for event in self._events(self.intake):
                        self.batcher._dispatch(event)
                else:  # batched chunking batches within one request: one at a time
                    item = self.intake.take(wait=True)
                    if item is not None:
                        for event in self._events([item]):
                            self.batcher._dispatch(event)
            except WhisperctlError as exc:
                self.batcher._fail_group(self, exc)
            except Exception as exc:  # noqa: BLE001 - a bug must not take the server down; it fails these jobs
                log.exception("a decoding run failed")
                self.batcher._fail_group(self, WhisperctlError(f"internal error: {type(exc).__name__}: {exc}"))


__all__ = ["Batcher", "Busy", "Cancelled", "Job", "ModelThread"]
