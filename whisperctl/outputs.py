"""Which output files belong to which input: names, ownership records and exclusive claims.

Every input written to an output directory gets a *stem* (``x`` for ``a/x.wav``) and a record
``OUT/.whisperctl/<stem>.json`` naming the input that owns it (its real path and a content fingerprint). The
record is created with one ``link()``, which fails when the name exists, so among any number of processes
sharing ``OUT`` exactly one claims a stem; every other input with that stem moves on to ``x-2``, ``x-3`` … in
the order it claims. A claim is permanent: ``b/x.wav`` keeps ``x-2`` in every later run, and
``--skip-existing`` skips an input only when the record says the outputs came from that input with the same
content. Output files that exist with no record (written by hand, or by another tool) belong to nobody
whisperctl knows: they are replaced only with ``--overwrite``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from . import __version__
from .audio import input_identity
from .errors import OutputError
from .writers import WRITERS, safe_stem, write_atomic

RECORDS_DIR = ".whisperctl"
_MAX_SUFFIX = 10_000


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outputs of one input: its stem, the output paths, and what the record says about them."""

    stem: str
    paths: tuple[Path, ...]
    record: Path
    identity: dict[str, Any]
    previous: dict[str, Any] | None  # the record as an earlier run left it; None when claimed just now

    @property
    def unchanged(self) -> bool:
        """An earlier run wrote these outputs from this very content (so ``--skip-existing`` may skip them)."""
        prev = self.previous or {}
        fingerprint = self.identity.get("fingerprint")  # None for stdin: what came through it is unknowable
        return fingerprint is not None and prev.get("fingerprint") == fingerprint

    @property
    def verifiable(self) -> bool:
        """Whether the input can be compared with what produced existing outputs (not so for stdin)."""
        return self.identity.get("fingerprint") is not None

    def existing(self) -> list[Path]:
        return [p for p in self.paths if p.exists()]

    def written(self, formats: list[str]) -> None:
        """Record that the outputs now hold this input's transcript (after they were written)."""
        _write_record(self.record, {**self.identity, "stem": self.stem, "formats": formats, "whisperctl": __version__})


class OutputDirectory:
    """Hands out exclusive, permanent output names in one directory (see the module docstring)."""

    def __init__(self, directory: Path, extensions: list[str]):
        self.dir = directory
        self.extensions = extensions
        self.records = directory / RECORDS_DIR
        self._taken_here: set[str] = set()

    def claim(self, input_name: str, overwrite: bool = False) -> Claim:
        """The stem this input owns: the one recorded for it, or the first free ``x``, ``x-2`` … claimed now.

        Raises :class:`OutputError` when the first free name has output files that no record explains (and
        ``overwrite`` is false): they may be someone's work."""
        try:
            self.records.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.records}: cannot create the ownership records: {exc.strerror or exc}.") from None
        identity = input_identity(input_name)
        base = safe_stem("stdin" if input_name == "-" else Path(input_name).stem)
        for _ in range(100):  # a lost race for a free name: look again
            known: list[tuple[str, Path, dict[str, Any] | None]] = []
            free = None
            for n in range(1, _MAX_SUFFIX):
                stem = base if n == 1 else f"{base}-{n}"
                record = self.records / f"{stem}.json"
                if record.exists():
                    known.append((stem, record, _read_record(record)))
                elif stem not in self._taken_here:
                    free = (stem, record)
                    break
            else:
                raise OutputError(f"{self.dir}: {_MAX_SUFFIX} inputs named '{base}'; use separate output directories.")
            # the record naming this very path first, then one with this content (the file was moved or copied)
            for same in (lambda r: r.get("input") == identity["input"],
                         lambda r: identity["fingerprint"] is not None and r.get("fingerprint") == identity["fingerprint"]):
                for stem, record, previous in known:
                    if previous is not None and stem not in self._taken_here and same(previous):
                        self._taken_here.add(stem)
                        return Claim(stem, self._paths(stem), record, identity, previous)
            stem, record = free
            paths = self._paths(stem)
            unowned = [p for p in paths if p.exists()]
            if unowned and not overwrite:
                raise OutputError(
                    f"{unowned[0]} exists and no whisperctl record says which input wrote it; pass --overwrite to "
                    "replace it, or choose another --output-dir.")
            if _write_record(record, {**identity, "stem": stem, "formats": [], "whisperctl": __version__}, exclusive=True):
                self._taken_here.add(stem)
                return Claim(stem, paths, record, identity, None)
        raise OutputError(f"{self.dir}: could not claim an output name for {input_name} (too much contention).")

    def _paths(self, stem: str) -> tuple[Path, ...]:
        return tuple(self.dir / f"{stem}.{ext}" for ext in self.extensions)


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "input" in data else None


def _write_record(path: Path, data: dict[str, Any], exclusive: bool = False) -> bool:
    """Write a record whole (``exclusive``: only if absent; False when another process has it)."""
    return write_atomic(path, json.dumps(data, ensure_ascii=False, indent=1), exclusive=exclusive)


@dataclasses.dataclass
class OutputPlan:
    """What a run into an output directory will do: the inputs to transcribe with their claims, the inputs skipped
    (``--skip-existing``: their outputs exist and came from the same content), and the inputs refused with why."""

    claims: dict[str, Claim]  # the inputs to transcribe, in order, with their claims
    skipped: int
    problems: list[tuple[str, str]]

    @property
    def todo(self) -> list[str]:
        return list(self.claims)


def plan_outputs(inputs: list[str], directory: Path, formats: list[Any], overwrite: bool = False,
                 skip_existing: bool = False) -> OutputPlan:
    """Claim every input's output names in ``directory`` (exclusively, see the module docstring) and decide what
    to do with outputs that exist: replaced with ``overwrite``; kept and the input skipped with ``skip_existing``
    when the record says they came from this very content; else the input is refused (someone's work)."""
    outputs = OutputDirectory(directory, [WRITERS[f][0] for f in formats])
    plan = OutputPlan({}, 0, [])
    for name in inputs:
        try:
            claim = outputs.claim(name, overwrite=overwrite)
        except OutputError as exc:
            plan.problems.append((name, str(exc)))
            continue
        existing = claim.existing() if claim.previous is not None else []
        if existing and skip_existing and claim.unchanged and len(existing) == len(claim.paths):
            plan.skipped += 1
            continue
        if existing and not overwrite and not (skip_existing and claim.verifiable):
            # without --overwrite, outputs are replaced only when the input is known to have changed since
            if skip_existing:
                why = "standard input cannot be matched to the outputs of an earlier run; pass --overwrite to replace them."
            else:
                why = "pass --overwrite to replace it or --skip-existing to keep it."
            plan.problems.append((name, f"{existing[0]} exists (this input's, from an earlier run); {why}"))
            continue
        plan.claims[name] = claim
    return plan


def write_outputs(claim: Claim, formats: list[Any], transcript: Any) -> None:
    """Each format's file, written whole and atomically, then the record saying they hold this input's transcript
    (a process killed in between leaves complete files and an older record: a rerun writes them again)."""
    for fmt, path in zip(formats, claim.paths):
        write_atomic(path, WRITERS[fmt][1](transcript))
    claim.written([WRITERS[f][0] for f in formats])
