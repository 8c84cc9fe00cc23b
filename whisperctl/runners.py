"""Runners: what turns many inputs' speech streams into events, window batch after window batch.

Two runners drive the same :class:`~whisperctl.decoding.WindowDecoder` (one decoding policy):

- :class:`whisperctl.sequential.SequentialRunner` (``--chunking sequential``, the default): openai-whisper's seeking
  loop per lane (an input, or a section of a long one), lanes in lock-step;
- :class:`whisperctl.scheduler.BatchedScheduler` (``--chunking batched`` and ``vad``): fixed windows of many inputs
  in shared batches, merged at seams.

Both are built from one :class:`RunContext` and honour one :class:`Runner` contract: :meth:`Runner.run` takes the
inputs with their :class:`~whisperctl.regions.SpeechStream` and yields, input after input, each input's settled
segments and then exactly one ``FileDone`` (its transcript or its error) for every input, whatever fails: a batch
that fails fails every input with a window in it, recorded in the runner's bookkeeping (``LaneBook``,
``FileWindows``), and the other inputs finish. :func:`runner_for` picks one for the options.

The inputs come through an :class:`Intake`: a fixed list (the CLI, a Ray worker's batch), or a *live* one that
receives inputs while the run goes on (``whisperctl serve``). The sequential runner reads a live intake at every
batch boundary, so an input that arrives joins the running batch at the next window; its inputs' events come
out as they settle, input by input but not in arrival order, and an input cancelled through the intake (a client
that went away) ends at the next batch with a ``FileDone`` carrying :class:`Cancelled`. This is the one loop the
CLI, the Ray workers and the server drive (:meth:`whisperctl.engine.Transcriber.events`).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

from .config import Chunking, DecodeOptions
from .errors import WhisperctlError

if TYPE_CHECKING:
    from .decoding import WindowDecoder
    from .inputs import AudioInput
    from .regions import SpeechStream
    from .transcript import Event, Resume, TranscriptBuilder

ProgressFn = Callable[[str, float], None]  # (input name, seconds of audio just finished)


@dataclasses.dataclass(frozen=True)
class RunContext:
    """What a runner is built from: the decoder (its policy and backend), the per-call options, how an input's
    transcript builder is made and how an ended input's result is made from it, and an optional progress hook."""

    decoder: "WindowDecoder"
    options: DecodeOptions
    new_builder: Callable[["AudioInput", "SpeechStream"], "TranscriptBuilder"]
    finish: Callable[["TranscriptBuilder", float], Any]  # (builder, duration) → the input's Transcript
    progress: ProgressFn | None = None
    # the initial prompt's tokens of one input (the server's requests each have their own); None: the options'
    prompt_for: Callable[["AudioInput"], list[int] | None] | None = None
    # runs each batch's decode (a callable) and returns its result: here, by default; the server has every
    # decode run by the one thread that owns the model (see whisperctl.serve.batcher.ModelThread)
    call: Callable[[Callable[[], Any]], Any] = lambda work: work()  # noqa: E731


class Cancelled(WhisperctlError):
    """An input cancelled through its :class:`Intake` before it finished (the client went away)."""


class Intake:
    """The inputs of a run, in arrival order, each made ready (its speech stream opened) when a runner takes it.

    A fixed intake (``Intake(items)``) is closed from the start. A live one (``Intake(live=True)``) takes inputs
    from other threads with :meth:`put` while a runner reads it, and ends once :meth:`close` d and empty; a
    runner waits on it only when it has nothing else to do. :meth:`cancel` takes an input back: one still
    waiting is dropped, one running is failed by the runner at its next batch (its lanes are freed)."""

    def __init__(self, items: Iterable[Any] = (), live: bool = False):
        self.live = live
        self._items: collections.deque[Any] = collections.deque(items)
        self._closed = not live
        self._cancelled: set[Any] = set()
        self._cond = threading.Condition()
        self._prepare: Callable[[Any], tuple["AudioInput", "SpeechStream"]] | None = None

    def prepared(self, prepare: Callable[[Any], tuple["AudioInput", "SpeechStream"]]) -> "Intake":
        """This intake, its items made ready by ``prepare`` when taken (the engine opens each speech stream)."""
        self._prepare = prepare
        return self

    def put(self, item: Any) -> None:
        with self._cond:
            if self._closed:
                raise RuntimeError("the intake is closed")
            self._items.append(item)
            self._cond.notify_all()

    def close(self) -> None:
        """No more inputs: the runner ends once those already put are done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def cancel(self, source: "AudioInput") -> bool:
        """Take ``source`` back; True when it had not been taken by the runner yet (then it never starts)."""
        with self._cond:
            for item in self._items:
                if _source_of(item) == source:
                    self._items.remove(item)
                    return True
            self._cancelled.add(source)
            return False

    def cancelled(self, source: "AudioInput") -> bool:
        with self._cond:
            return source in self._cancelled

    def forget(self, source: "AudioInput") -> None:
        """``source`` has ended: no need to remember it was cancelled."""
        with self._cond:
            self._cancelled.discard(source)

    @property
    def pending(self) -> bool:
        """Inputs are waiting to be taken."""
        return self.waiting > 0

    @property
    def waiting(self) -> int:
        """How many inputs wait to be taken."""
        with self._cond:
            return len(self._items)

    @property
    def exhausted(self) -> bool:
        """Closed and empty: nothing more will come."""
        with self._cond:
            return self._closed and not self._items

    def take(self, wait: bool = False) -> tuple["AudioInput", "SpeechStream"] | None:
        """The next input, made ready; None when none is waiting (``wait``: until one comes or the intake
        closes)."""
        with self._cond:
            while wait and not self._items and not self._closed:
                self._cond.wait()
            if not self._items:
                return None
            item = self._items.popleft()
        return self._prepare(item) if self._prepare is not None else item


def _source_of(item: Any) -> Any:
    return item[0] if isinstance(item, tuple) else item


class Runner(Protocol):
    def run(self, inputs: "Intake | list[tuple[AudioInput, SpeechStream]]") -> Iterator["Event"]:
        """Each input's settled segments, then one ``FileDone``; every input gets its ``FileDone``."""


def runner_for(context: RunContext, resume: Callable[["AudioInput"], "Resume | None"] | None = None,
               checkpoints: bool = False) -> Runner:
    """The runner ``context.options.chunking`` asks for; ``resume``/``checkpoints``: sequential chunking only
    (see :meth:`whisperctl.engine.Transcriber.events`)."""
    if context.options.chunking == Chunking.SEQUENTIAL:
        from .sequential import SequentialRunner

        return SequentialRunner(context, resume, checkpoints)
    from .scheduler import BatchedScheduler

    return BatchedScheduler(context)
