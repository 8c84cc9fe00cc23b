"""The sequential loop's lanes: which inputs are admitted, which sections run, whose text goes to the builder.

:class:`LaneBook` is the state :class:`~whisperctl.sequential.SequentialRunner` keeps across its inputs, as a
pure class: no model, no decoder, no audio reading. A *lane* is a section of an input (the whole input when it is
not cut) running its own seeking loop; up to ``width`` lanes are live at once. The runner reads each live lane's
next window, decodes the batch and reports back; the book decides the rest:

- **opening**: a free lane takes the next section of the oldest admitted input that has sections left, and a
  new input is admitted only when none has (:meth:`LaneBook.to_open`, :meth:`admit`, :meth:`open`). A *shared*
  book (the server's, ``ordered=False``) is fair instead: a free lane goes to the admitted input with the fewest
  live lanes, and to a newcomer before any input that already has one, so an hour-long upload cut into sections
  takes every lane only while nobody else waits;
- **text**: an input's lanes run in stream order and only the first (the *head*) adds its windows' timed tokens
  to the input's builder; the others hold theirs until every lane before them has finished, then hand them on in
  order (:meth:`decoded`, :meth:`lane_finished`);
- **ending**: an input ends once all its lanes have finished and its sections are exhausted (an input with no
  sections at all ends with an empty transcript); a failure ends it at once, frees its lanes and gives one
  ``FileDone`` with the error (:meth:`fail`);
- **events** come out input after input in admission order (:meth:`ready`): the first input's segments as they
  settle, the others' once every input before them is done; a shared book gives every input's as they settle;
- **checkpoints** (when asked for): after the segments of each window the head hands on, a
  :class:`~whisperctl.transcript.Checkpoint` saying where decoding could go on from (the window's seeking state,
  which the runner gives with it), and one when the head finishes (the next section, from its start).

Tested with a fake builder, fake sections and fake timed tokens (tests/test_lanes.py).
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Protocol

from .inputs import AudioInput
from .errors import WhisperctlError
from .transcript import Checkpoint, Event, FileDone, ResumePoint, SegmentReady, TranscriptBuilder

SeekState = tuple  # (section, seek, window, history): a lane's seeking state after a window, from the runner


class SectionSource(Protocol):
    """An input's sections (:class:`whisperctl.sections.Sections`): the runner reads them, the book only asks
    whether any are left."""

    @property
    def exhausted(self) -> bool:
        """Every section has been handed out."""

    def next(self) -> Any:
        """The next section (reads the input's audio), or None."""


class InputLanes:
    """An admitted input: its builder, its sections, its open lanes in stream order and the events it produced
    before its turn to emit."""

    def __init__(self, source: AudioInput, builder: TranscriptBuilder, sections: SectionSource, checkpoints: bool = False):
        self.source, self.builder, self.sections = source, builder, sections
        self.checkpoints = checkpoints and not builder.holds_back  # a held-back segment is not settled yet
        self.lanes: collections.deque[Lane] = collections.deque()  # open lanes, in stream order; [0] is the head
        self.events: collections.deque[Event] = collections.deque()
        self.duration = 0.0  # seconds of the stream read by its finished lanes
        self.done = False  # ended or failed: no more lanes, windows or events of its own
        self.opened = 0  # lanes opened so far
        self.resume: Any = None  # where an interrupted run stood (a ResumePoint), until its section opens

    @property
    def sections_left(self) -> bool:
        return not self.done and not self.sections.exhausted


class Lane:
    """One section of an input. ``seeker``: the runner's loop state for it, which the book never reads."""

    def __init__(self, owner: InputLanes, index: int, offset_s: float, seeker: Any):
        self.owner, self.index, self.offset_s, self.seeker = owner, index, offset_s, seeker
        self.held: list[tuple[list, Any, Any]] = []  # (timed tokens, window key, seek state) before it became the head
        self.finished = False


class LaneBook:
    """The lanes of a sequential run, ``width`` live at most. ``finish(builder, duration)`` makes an ended
    input's result (its transcript)."""

    def __init__(self, width: int, finish: Callable[[TranscriptBuilder, float], Any], ordered: bool = True):
        self.width = max(1, width)
        self._finish = finish
        self.ordered = ordered  # False: shared by independent clients (fair lanes, events as they settle)
        self._order: collections.deque[InputLanes] = collections.deque()  # admitted, not yet fully emitted
        self.live: list[Lane] = []  # in the order their windows are batched

    @property
    def has_room(self) -> bool:
        return len(self.live) < self.width

    @property
    def idle(self) -> bool:
        """Nothing admitted is left to run or emit (an input may have sections to open while no lane is live)."""
        return not self.live and not self._order

    def to_open(self, newcomers: bool = False) -> InputLanes | None:
        """The admitted input whose next section takes a free lane; None: admit the next input, if any.
        Ordered: the oldest with sections still to open. Shared: the one with the fewest live lanes (oldest
        first), but None while ``newcomers`` wait and it already has a live lane."""
        if self.ordered:
            return next((owner for owner in self._order if owner.sections_left), None)
        candidates = [owner for owner in self._order if owner.sections_left]
        if not candidates:
            return None
        owner = min(candidates, key=lambda o: sum(not lane.finished for lane in o.lanes))
        return None if newcomers and any(not lane.finished for lane in owner.lanes) else owner

    @property
    def running(self) -> list[InputLanes]:
        """The admitted inputs that have not ended."""
        return [owner for owner in self._order if not owner.done]

    def admit(self, source: AudioInput, builder: TranscriptBuilder, sections: SectionSource,
              checkpoints: bool = False, duration: float = 0.0) -> InputLanes:
        """Admit an input; ``checkpoints``: give its :class:`Checkpoint` s; ``duration``: seconds of its stream
        already done (a resumed input)."""
        owner = InputLanes(source, builder, sections, checkpoints)
        owner.duration = duration
        self._order.append(owner)
        return owner

    def open(self, owner: InputLanes, index: int, offset_s: float, seeker: Any) -> Lane:
        """A live lane for ``owner``'s section ``index``, which starts ``offset_s`` into its stream."""
        if not self.has_room:
            raise RuntimeError(f"all {self.width} lanes are live")
        lane = Lane(owner, index, offset_s, seeker)
        owner.opened += 1
        owner.lanes.append(lane)
        self.live.append(lane)
        return lane

    def sections_ended(self, owner: InputLanes) -> None:
        """``owner`` has no section left to open (its sections' ``next()`` gave None)."""
        if not owner.lanes and not owner.done:
            self._end(owner)

    def decoded(self, lane: Lane, timed: list, key: Any, state: SeekState | None = None) -> None:
        """Window ``key`` of ``lane`` gave ``timed`` tokens: to the builder from the head, held otherwise.
        ``state``: the lane's seeking state after the window, for its checkpoint."""
        owner = lane.owner
        if owner.done:
            return
        if lane is owner.lanes[0]:
            self._add(owner, timed, key, state)
        else:
            lane.held.append((timed, key, state))

    def lane_finished(self, lane: Lane, read_s: float) -> None:
        """``lane``'s audio (``read_s`` seconds of its section) is all decoded: it stops being live; when it is
        the head, the finished lanes after it hand on too, and the next one's held windows go to the builder;
        the input ends with its last section."""
        self.live.remove(lane)
        lane.finished = True
        owner = lane.owner
        owner.duration = max(owner.duration, lane.offset_s + read_s)
        while owner.lanes and owner.lanes[0].finished:
            done = owner.lanes.popleft()
            self._checkpoint(owner, (done.index + 1, 0, 0, ()))  # the next section, from its start
            if owner.lanes:
                head = owner.lanes[0]
                for timed, key, state in head.held:
                    self._add(owner, timed, key, state)
                head.held = []
        if not owner.lanes and owner.sections.exhausted and not owner.done:
            self._end(owner)

    def fail(self, owner: InputLanes, error: WhisperctlError) -> None:
        """``owner`` failed: its lanes are freed and its last event is one FileDone with ``error``."""
        for lane in owner.lanes:
            if lane in self.live:
                self.live.remove(lane)
        owner.lanes.clear()
        if not owner.done:
            owner.events.append(FileDone(owner.source, error))
            owner.done = True

    def ready(self) -> list[Event]:
        """The events that may be emitted now, in input order (shared: every input's); inputs fully emitted are
        forgotten."""
        out: list[Event] = []
        if not self.ordered:
            for owner in list(self._order):
                out.extend(owner.events)
                owner.events.clear()
                if owner.done:
                    self._order.remove(owner)
            return out
        while self._order and (self._order[0].events or self._order[0].done):
            head = self._order[0]
            out.extend(head.events)
            head.events.clear()
            if head.done:
                self._order.popleft()
        return out

    def _add(self, owner: InputLanes, timed: list, key: Any, state: SeekState | None = None) -> None:
        for segment in owner.builder.add(timed):
            owner.events.append(SegmentReady(owner.source, segment))
        owner.builder.forget([key])
        self._checkpoint(owner, state)

    def _checkpoint(self, owner: InputLanes, state: SeekState | None) -> None:
        if not owner.checkpoints or state is None or owner.done:
            return
        section, seek, window, history = state
        owner.events.append(Checkpoint(owner.source, ResumePoint(
            section, seek, window, tuple(history), owner.builder.built_until, owner.builder.language, owner.duration)))

    def _end(self, owner: InputLanes) -> None:
        for segment in owner.builder.close(owner.duration):
            owner.events.append(SegmentReady(owner.source, segment))
        owner.events.append(FileDone(owner.source, self._finish(owner.builder, owner.duration)))
        owner.done = True
