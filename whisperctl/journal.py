"""Journals: an interrupted long input goes on where it stopped, not from zero.

While an input is transcribed into an output directory (sequential chunking, the default), each window's settled
segments and then the point decoding could go on from (:class:`~whisperctl.transcript.Checkpoint`) are appended
to ``OUT/.whisperctl/<stem>.journal``, next to the input's ownership record (:mod:`whisperctl.outputs`). The
first line names the input's content fingerprint and the id of the output-affecting options; every line is one
JSON object written with one ``write()`` on a file opened for appending, so a process killed at any moment (even
SIGKILL) leaves whole lines and at most one torn last line, which reading ignores.

A later run of the same command (with or without ``--skip-existing``) reads the journal: segments up to the last
checkpoint are kept, the rest dropped, and decoding goes on from that checkpoint's point with the same windows
and prompts an uninterrupted run has there (:meth:`whisperctl.engine.Transcriber.events`, ``resume=``). A
journal whose input changed, or that was written with other output-affecting options, is ignored and replaced;
``--overwrite`` removes it; an input's journal is removed once its outputs are written. Lines are not fsynced:
they survive the process's death, not the machine's.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from .outputs import Claim, settings_id
from .results import Segment
from .transcript import Resume, ResumePoint

VERSION = 1


def path_of(claim: Claim) -> Path:
    return claim.record.with_suffix(".journal")


class Journal:
    """One input's journal: :meth:`resume` reads what an interrupted run left; :meth:`segment` and
    :meth:`checkpoint` append; :meth:`remove` deletes it."""

    def __init__(self, claim: Claim, settings: Mapping[str, Any]):
        self.path = path_of(claim)
        self._header = {"journal": VERSION, "input": claim.identity.get("input"),
                        "fingerprint": claim.identity.get("fingerprint"), "settings": settings_id(settings)}
        self._fd: int | None = None

    @property
    def usable(self) -> bool:
        """Whether a rerun could tell this input's content (not so for standard input)."""
        return self._header["fingerprint"] is not None

    def resume(self) -> Resume | None:
        """The interrupted run's settled segments and point, when the journal is this input's with these options
        and holds a checkpoint; a journal that is not (changed input, other options, unreadable) is removed."""
        try:
            raw = self.path.read_bytes()
        except OSError:
            return None
        lines = raw.split(b"\n")
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = None
        if not isinstance(header, dict) or any(header.get(k) != self._header[k] for k in ("journal", "fingerprint", "settings")):
            self.remove()
            return None
        segments: list[Segment] = []
        pending: list[Segment] = []
        point: ResumePoint | None = None
        for line in lines[1:-1]:  # the last piece is "" after a whole line, or a torn line: left out
            try:
                entry = json.loads(line)
                if "segment" in entry:
                    pending.append(Segment.from_dict(entry["segment"]))
                elif "checkpoint" in entry:
                    point = ResumePoint.from_dict(entry["checkpoint"])
                    segments += pending
                    pending = []
            except (ValueError, KeyError, TypeError):
                break  # never written this way: stop at the last good checkpoint
        if point is None:
            self.remove()
            return None
        # rewritten with what is kept only, so that the lines after the checkpoint (and a torn one) are gone
        # before this run appends; written aside and renamed over, so an interruption now loses nothing
        aside = self.path.with_suffix(".journal.tmp")
        aside.write_bytes(_line(self._header) + b"".join(_line({"segment": dataclasses.asdict(seg)}) for seg in segments)
                          + _line({"checkpoint": point.to_dict()}))
        os.replace(aside, self.path)
        return Resume(segments, point)

    def segment(self, segment: Segment) -> None:
        self._append({"segment": dataclasses.asdict(segment)})

    def checkpoint(self, point: ResumePoint) -> None:
        self._append({"checkpoint": point.to_dict()})

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def remove(self) -> None:
        self.close()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def _append(self, entry: dict[str, Any]) -> None:
        if self._fd is None:
            fresh = not self.path.exists()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            if fresh or self.path.stat().st_size == 0:
                os.write(self._fd, _line(self._header))
        os.write(self._fd, _line(entry))


def _line(entry: Mapping[str, Any]) -> bytes:
    # ASCII: a file name that is not UTF-8 (surrogate escapes) is written as \u escapes, and read back the same
    return json.dumps(entry, separators=(",", ":")).encode() + b"\n"


