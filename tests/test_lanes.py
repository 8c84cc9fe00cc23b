"""The sequential loop's lanes (whisperctl.lanes.LaneBook) with a fake builder, fake sections and fake tokens:
no model.

Inputs emit in admission order whatever finishes first; a later section's windows wait until the sections before
it have finished; a failure fails the whole input once and frees its lanes; an input whose lanes all finished
with sections still to open keeps the run going; no more than ``width`` lanes are live; an input without
sections ends with an empty transcript.
"""

import pytest

from whisperctl.inputs import AudioInput
from whisperctl.errors import AudioError
from whisperctl.lanes import LaneBook
from whisperctl.transcript import FileDone, SegmentReady


class FakeSections:
    """``count`` sections, section ``i`` is ``i``."""

    def __init__(self, count: int):
        self.count, self.taken = count, 0

    @property
    def exhausted(self) -> bool:
        return self.taken >= self.count

    def next(self) -> int | None:
        if self.exhausted:
            return None
        self.taken += 1
        return self.taken - 1


class FakeBuilder:
    """Each timed token added becomes one segment, its own value; ``close`` gives back ``closing``."""

    def __init__(self, closing=()):
        self.added, self.forgotten, self.closing = [], [], list(closing)
        self.closed_at = None

    def add(self, timed):
        self.added.extend(timed)
        return list(timed)

    def forget(self, keys):
        self.forgotten.extend(keys)

    def close(self, duration):
        self.closed_at = duration
        return self.closing


def finish(builder, duration):
    return ("transcript", list(builder.added), duration)


def source(name: str) -> AudioInput:
    return AudioInput(name=name, path=None)


def admit(book: LaneBook, name: str, sections: int, builder=None):
    return book.admit(source(name), builder or FakeBuilder(), FakeSections(sections))


def open_next(book: LaneBook, owner, offset_s: float = 0.0):
    """The runner's step: the next section of ``owner`` as a live lane."""
    return book.open(owner, owner.sections.next(), offset_s, seeker=None)


def summary(events):
    """(input name, segment or transcript/error) per event."""
    out = []
    for e in events:
        if isinstance(e, SegmentReady):
            out.append((e.source.name, e.segment))
        else:
            assert isinstance(e, FileDone)
            out.append((e.source.name, e.result if isinstance(e.result, tuple) else str(e.result)))
    return out


def test_events_come_in_input_order_when_a_later_input_finishes_first():
    book = LaneBook(2, finish)
    a, b = admit(book, "a", 1), admit(book, "b", 1)
    lane_a, lane_b = open_next(book, a), open_next(book, b)
    book.decoded(lane_a, ["a1"], (0, 0))
    assert summary(book.ready()) == [("a", "a1")]  # the first input streams as its segments settle
    book.decoded(lane_b, ["b1"], (0, 0))
    book.lane_finished(lane_b, 5.0)
    assert b.done and book.ready() == []  # b is done but waits for a
    book.decoded(lane_a, ["a2"], (0, 1))
    book.lane_finished(lane_a, 40.0)
    assert summary(book.ready()) == [
        ("a", "a2"), ("a", ("transcript", ["a1", "a2"], 40.0)),
        ("b", "b1"), ("b", ("transcript", ["b1"], 5.0)),
    ]
    assert book.idle and book.ready() == []


def test_a_later_sections_windows_are_held_until_the_sections_before_it_finish():
    book = LaneBook(3, finish)
    builder = FakeBuilder()
    owner = admit(book, "long", 3, builder)
    s0, s1, s2 = (open_next(book, owner, offset) for offset in (0.0, 70.0, 140.0))
    book.decoded(s2, ["s2w0"], (2, 0))
    book.decoded(s1, ["s1w0"], (1, 0))
    book.decoded(s0, ["s0w0"], (0, 0))
    assert builder.added == ["s0w0"] and builder.forgotten == [(0, 0)]
    book.decoded(s1, ["s1w1"], (1, 1))
    book.lane_finished(s2, 50.0)
    book.lane_finished(s1, 69.0)
    assert builder.added == ["s0w0"]  # section 0 is still running: nothing of 1 or 2 is handed on
    book.decoded(s0, ["s0w1"], (0, 1))
    book.lane_finished(s0, 70.0)
    # section 0 done: 1 and 2 (both finished) hand their windows on, in stream order, and the input ends
    assert builder.added == ["s0w0", "s0w1", "s1w0", "s1w1", "s2w0"]
    assert builder.forgotten == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0)]
    events = summary(book.ready())
    assert events[-1] == ("long", ("transcript", builder.added, 190.0))  # the last section's offset + its audio
    assert [seg for _, seg in events[:-1]] == builder.added


def test_the_next_section_becomes_the_head_and_adds_directly():
    book = LaneBook(2, finish)
    builder = FakeBuilder()
    owner = admit(book, "long", 2, builder)
    s0, s1 = open_next(book, owner), open_next(book, owner, 70.0)
    book.decoded(s1, ["s1w0"], (1, 0))
    book.lane_finished(s0, 70.0)
    assert builder.added == ["s1w0"] and not owner.done
    book.decoded(s1, ["s1w1"], (1, 1))  # now the head: straight to the builder
    assert builder.added == ["s1w0", "s1w1"] and s1.held == []


def test_a_failed_section_fails_the_whole_input_once_and_frees_its_lanes():
    book = LaneBook(3, finish)
    builder = FakeBuilder()
    owner = admit(book, "long", 3, builder)
    s0, s1 = open_next(book, owner), open_next(book, owner, 70.0)
    other = admit(book, "other", 1)
    lane_o = open_next(book, other)
    book.decoded(s0, ["s0w0"], (0, 0))
    error = AudioError("long.flac: truncated")
    book.fail(owner, error)
    book.fail(owner, error)  # a failed batch fails each of its lanes' inputs: twice here
    assert book.live == [lane_o] and book.has_room
    assert book.to_open() is None  # its third section is never opened
    book.decoded(s1, ["late"], (1, 0))  # a window decoded in the same batch is dropped
    book.lane_finished(lane_o, 3.0)
    assert summary(book.ready()) == [
        ("long", "s0w0"), ("long", "long.flac: truncated"),
        ("other", ("transcript", [], 3.0)),
    ]
    assert builder.added == ["s0w0"] and builder.closed_at is None and book.idle


def test_an_input_with_sections_left_and_no_live_lane_keeps_the_run_going():
    # 479f8ed: at batch size 2 the runner stopped once no lane was live and no input was waiting, losing the
    # FileDone of an input whose open sections had all finished with more still to open
    book = LaneBook(2, finish)
    owner = admit(book, "long", 3)
    s0, s1 = open_next(book, owner), open_next(book, owner, 70.0)
    book.lane_finished(s1, 60.0)
    book.lane_finished(s0, 70.0)
    assert book.live == [] and not owner.done
    assert not book.idle and book.to_open() is owner
    s2 = open_next(book, owner, 140.0)
    book.lane_finished(s2, 20.0)
    assert summary(book.ready()) == [("long", ("transcript", [], 160.0))] and book.idle


def test_open_sections_of_admitted_inputs_first_and_no_more_than_width_lanes():
    book = LaneBook(2, finish)
    first = admit(book, "first", 3)
    assert book.to_open() is first
    open_next(book, first)
    open_next(book, first, 70.0)
    assert not book.has_room
    with pytest.raises(RuntimeError, match="all 2 lanes are live"):
        book.open(first, 2, 140.0, seeker=None)
    book.lane_finished(book.live[0], 70.0)
    assert book.has_room and book.to_open() is first  # its third section before any new input
    open_next(book, first, 140.0)
    assert book.to_open() is None  # first has no sections left: the runner admits the next input


def test_width_below_one_runs_one_lane():
    book = LaneBook(0, finish)
    open_next(book, admit(book, "a", 1))
    assert not book.has_room


def test_an_input_without_sections_ends_with_an_empty_transcript():
    book = LaneBook(2, finish)
    silent = FakeBuilder(closing=[])
    owner = admit(book, "silent", 0, silent)
    assert owner.sections.next() is None  # the runner's read of its first section
    book.sections_ended(owner)
    assert owner.done and silent.closed_at == 0.0
    assert summary(book.ready()) == [("silent", ("transcript", [], 0.0))] and book.idle


def test_segments_held_back_by_the_builder_come_before_the_file_done():
    book = LaneBook(1, finish)
    owner = admit(book, "a", 1, FakeBuilder(closing=["last"]))
    lane = open_next(book, owner)
    book.decoded(lane, ["a1"], (0, 0))
    book.lane_finished(lane, 12.0)
    assert summary(book.ready()) == [("a", "a1"), ("a", "last"), ("a", ("transcript", ["a1"], 12.0))]


# ------------------------------------------------------------------ the shared book (the server's)
def test_shared_book_gives_a_newcomer_the_next_lane_before_a_long_input_gets_another():
    book = LaneBook(3, finish, ordered=False)
    long = book.admit(source("long"), FakeBuilder(), FakeSections(10))
    for i in range(3):  # alone, the long input takes every lane
        assert book.to_open(newcomers=False) is long
        book.open(long, long.sections.next(), 60.0 * i, seeker=None)
    book.lane_finished(book.live[0], 60.0)
    assert book.to_open(newcomers=True) is None  # a request waits: it is admitted first
    short = book.admit(source("short"), FakeBuilder(), FakeSections(1))
    assert book.to_open(newcomers=False) is short
    book.open(short, short.sections.next(), 0.0, seeker=None)
    book.lane_finished(book.live[0], 60.0)
    # two inputs with sections left: the one with fewer live lanes first
    other = book.admit(source("other"), FakeBuilder(), FakeSections(2))
    assert book.to_open(newcomers=False) is other


def test_shared_book_emits_each_input_as_it_settles_not_in_admission_order():
    book = LaneBook(2, finish, ordered=False)
    first = book.admit(source("first"), FakeBuilder(), FakeSections(1))
    second = book.admit(source("second"), FakeBuilder(), FakeSections(1))
    a = book.open(first, first.sections.next(), 0.0, seeker=None)
    b = book.open(second, second.sections.next(), 0.0, seeker=None)
    book.decoded(a, ["a1"], key=(0, 0))
    book.decoded(b, ["b1"], key=(0, 0))
    book.lane_finished(b, 5.0)
    first.sections.next(), second.sections.next()
    events = book.ready()
    assert [(type(e).__name__, e.source.name) for e in events] == [
        ("SegmentReady", "first"), ("SegmentReady", "second"), ("FileDone", "second")]
    assert book.running == [first]  # the finished input is forgotten, the other still runs
    book.lane_finished(a, 5.0)
    assert [e.source.name for e in book.ready()] == ["first"] and book.idle


def test_ordered_book_still_holds_a_later_input_back():
    book = LaneBook(2, finish)
    first = book.admit(source("first"), FakeBuilder(), FakeSections(1))
    second = book.admit(source("second"), FakeBuilder(), FakeSections(1))
    book.open(first, first.sections.next(), 0.0, seeker=None)
    b = book.open(second, second.sections.next(), 0.0, seeker=None)
    book.lane_finished(b, 5.0)
    assert book.ready() == []


def test_live_intake_takes_cancels_and_ends():
    import threading

    from whisperctl.runners import Intake

    intake = Intake(live=True)
    assert intake.take() is None and not intake.exhausted
    got = []
    waiter = threading.Thread(target=lambda: got.append(intake.take(wait=True)))
    waiter.start()
    intake.put((source("a"), None))
    waiter.join(5)
    assert got and got[0][0].name == "a"
    intake.put((source("b"), None))
    intake.put((source("c"), None))
    assert intake.cancel(source("b")) is True and intake.waiting == 1  # not started: dropped
    assert intake.cancel(source("a")) is False and intake.cancelled(source("a"))  # running: the runner fails it
    intake.close()
    assert not intake.exhausted and intake.take()[0].name == "c" and intake.exhausted
    with pytest.raises(RuntimeError):
        intake.put((source("d"), None))
