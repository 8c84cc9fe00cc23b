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
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from .config import Chunking, DecodeOptions

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


class Runner(Protocol):
    def run(self, inputs: list[tuple["AudioInput", "SpeechStream"]]) -> Iterator["Event"]:
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
