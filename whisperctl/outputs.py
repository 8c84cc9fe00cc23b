"""Which output files belong to which input: names, ownership records and exclusive claims.

Every input written to an output directory gets a *stem* (``x`` for ``a/x.wav``) and a record
``OUT/.whisperctl/<stem>.json`` naming the input that owns it (its real path and a content fingerprint). The
record is created with one ``link()``, which fails when the name exists, so among any number of processes
sharing ``OUT`` exactly one claims a stem; every other input with that stem moves on to ``x-2``, ``x-3`` … in
the order it claims. A claim is permanent: ``b/x.wav`` keeps ``x-2`` in every later run. Output files that exist
with no record (written by hand, or by another tool) belong to nobody whisperctl knows: they are replaced only
with ``--overwrite``.

The record also says, per output file, what made it: the input's content fingerprint and the id of the
output-affecting options (:func:`output_settings`). An output is *current* when it exists and its entry matches
this input's content and this run's options; ``--skip-existing`` skips an input only when every requested output
is current, and rewrites the others. Before an input's outputs are replaced their entries are dropped, so a write
that fails or is interrupted half-way never leaves an output counted as current.

A run reads each record of a name's chain (``x``, ``x-2`` …) at most once (:class:`_Chain`): planning 3000
inputs all named ``audio.wav`` stays linear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Mapping

from .version import __version__
from .inputs import input_identity
from .errors import OutputError
from .writers import WRITERS, safe_stem, sweep_partial_files, write_atomic

RECORDS_DIR = ".whisperctl"
_MAX_SUFFIX = 10_000

_EXTENSIONS = frozenset(ext for ext, _ in WRITERS.values())

#: per-call options and run controls that change how fast a transcript is made, not what it says
SPEED_ONLY_OPTIONS = frozenset({"batch_size", "halve_on_oom"})


def output_settings(config: Any, options: Any = None, control: Any = None) -> dict[str, Any]:
    """The options an output file's content depends on: the model as named, its weights, dtype and quantization
    as asked for, and every per-call decoding option and run control (``decode_tokens`` changes the text) except
    :data:`SPEED_ONLY_OPTIONS` (a new option counts until it is listed there: an unneeded redo is safer than a
    stale transcript). Device, attention kernel, threads and decoding loop are left out: they give the same
    words, and a resume on another machine should not redo a corpus. ``config`` is an
    :class:`~whisperctl.config.EngineConfig`, ``options`` the per-call :class:`~whisperctl.config.DecodeOptions`
    and ``control`` the :class:`~whisperctl.config.RunControl` (default: the config's)."""
    options = options if options is not None else config.decode_options()
    control = control if control is not None else config.run_control()
    per_call = {k: v for k, v in {**options.to_dict(), **control.to_dict()}.items() if k not in SPEED_ONLY_OPTIONS}
    return {"model": config.model.strip(), "weights": config.weights.value, "dtype": config.dtype.value,
            "quantization": config.quantization.value, **per_call}


def settings_id(settings: Mapping[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=8).hexdigest()


@dataclasses.dataclass(frozen=True)
class Claim:
    """The outputs of one input: its stem, the output paths, and what the record says about them."""

    stem: str
    paths: tuple[Path, ...]
    record: Path
    identity: dict[str, Any]
    previous: dict[str, Any] | None  # the record as an earlier run left it; None when claimed just now
    settings: Mapping[str, Any] | None = None  # this run's output-affecting options; None: unknown, nothing current
    keep: frozenset[str] = frozenset()  # extensions of outputs that are current and stay (--skip-existing)

    @property
    def verifiable(self) -> bool:
        """Whether the input can be compared with what produced existing outputs (not so for stdin)."""
        return self.identity.get("fingerprint") is not None

    def existing(self) -> list[Path]:
        return [p for p in self.paths if p.exists()]

    def current(self) -> list[Path]:
        """The outputs that exist and were made from this very content with this run's options."""
        fingerprint = self.identity.get("fingerprint")  # None for stdin: what came through it is unknowable
        if fingerprint is None or self.settings is None:
            return []
        made = _outputs_of(self.previous)
        want = {"fingerprint": fingerprint, "settings": settings_id(self.settings)}
        return [p for p in self.paths if made.get(p.suffix[1:]) == want and p.exists()]

    def done_now(self) -> bool:
        """Whether every output is current now, by the record as it is on disk (a worker elsewhere may have
        written them since this claim was made)."""
        return dataclasses.replace(self, previous=_read_record(self.record)).current() == [p for p in self.paths]

    def replacing(self, extensions: list[str]) -> None:
        """Before these outputs are replaced: they no longer count as anything's (a failure or an interruption
        part-way through leaves them to be made again)."""
        data = _read_record(self.record)
        made = _outputs_of(data)
        if data is None or not set(extensions) & set(made):
            return
        _write_record(self.record, _pruned({**data, "outputs": {k: v for k, v in made.items() if k not in extensions}}))

    def written(self, extensions: list[str]) -> None:
        """Record that these outputs now hold this input's transcript, made with this run's options."""
        data = _read_record(self.record) or {}
        made = _outputs_of(data)
        entry: dict[str, Any] = {"fingerprint": self.identity.get("fingerprint"), "settings": None}
        known = dict(data.get("settings") or {})
        if self.settings is not None:
            entry["settings"] = settings_id(self.settings)
            known[entry["settings"]] = dict(self.settings)
        made.update({ext: entry for ext in extensions})
        _write_record(self.record, _pruned({**data, **self.identity, "stem": self.stem, "outputs": made,
                                            "settings": known, "whisperctl": __version__}))


def _outputs_of(record: Mapping[str, Any] | None) -> dict[str, Any]:
    """The record's ``outputs`` (extension -> what made it); none for a record of an earlier whisperctl, which kept
    one fingerprint for all formats and nothing about the options (its outputs are made again)."""
    made = (record or {}).get("outputs")
    return dict(made) if isinstance(made, dict) else {}


def _pruned(record: dict[str, Any]) -> dict[str, Any]:
    """The record without settings no output refers to (and without the old all-formats ``formats`` list)."""
    used = {entry.get("settings") for entry in record["outputs"].values() if isinstance(entry, dict)}
    record = {k: v for k, v in record.items() if k != "formats"}
    record["settings"] = {k: v for k, v in (record.get("settings") or {}).items() if k in used}
    return record


class _Chain:
    """The records of one base name — ``x``, ``x-2``, ``x-3`` … up to the first free name — each read once, and
    indexed by the input path and content they name. Other processes only add records past the first free
    name (the exclusive link), so the part already read stays true; :meth:`extend` reads what they added."""

    def __init__(self, records: Path, base: str):
        self.records, self.base = records, base
        self.known: list[tuple[str, Path, dict[str, Any] | None]] = []
        self.by_input: dict[str, list[int]] = {}
        self.by_fingerprint: dict[str, list[int]] = {}
        self.next = 1  # suffix of the first name not read yet

    def name(self, n: int) -> str:
        return self.base if n == 1 else f"{self.base}-{n}"

    def extend(self, taken: set[str]) -> tuple[str, Path]:
        """Read the records up to the first free name not taken in this run; return that name and its record."""
        while self.next < _MAX_SUFFIX:
            stem = self.name(self.next)
            record = self.records / f"{stem}.json"
            if not record.exists():
                if stem not in taken:
                    return stem, record
                self.next += 1  # a record this run wrote was deleted under it: leave the name alone
                continue
            self.add(stem, record, _read_record(record))
        raise OutputError(f"{self.records.parent}: {_MAX_SUFFIX} inputs named '{self.base}'; use separate output directories.")

    def add(self, stem: str, record: Path, data: dict[str, Any] | None) -> None:
        index = len(self.known)
        self.known.append((stem, record, data))
        self.next += 1
        if data is not None:
            self.by_input.setdefault(str(data.get("input")), []).append(index)
            if data.get("fingerprint") is not None:
                self.by_fingerprint.setdefault(str(data["fingerprint"]), []).append(index)

    def find(self, identity: dict[str, Any], taken: set[str]) -> tuple[str, Path, dict[str, Any]] | None:
        """The record naming this very path first, then one with this content (the file was moved or copied)."""
        candidates = self.by_input.get(identity["input"], [])
        if identity["fingerprint"] is not None:
            candidates = candidates + self.by_fingerprint.get(identity["fingerprint"], [])
        for index in candidates:
            stem, record, data = self.known[index]
            if stem not in taken and data is not None:
                return stem, record, data
        return None


class OutputDirectory:
    """Hands out exclusive, permanent output names in one directory (see the module docstring)."""

    def __init__(self, directory: Path, extensions: list[str]):
        self.dir = directory
        self.extensions = extensions
        self.records = directory / RECORDS_DIR
        self._taken_here: set[str] = set()
        self._chains: dict[str, _Chain] = {}

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
        chain = self._chains.setdefault(base, _Chain(self.records, base))
        for _ in range(100):  # a lost race for a free name: read the record that won it, look again
            stem, record = chain.extend(self._taken_here)
            found = chain.find(identity, self._taken_here)
            if found is not None:
                self._taken_here.add(found[0])
                return Claim(found[0], self._paths(found[0]), found[1], identity, found[2])
            paths = self._paths(stem)
            unowned = [p for p in paths if p.exists()]
            if unowned and not overwrite:
                raise OutputError(
                    f"{unowned[0]} exists and no whisperctl record says which input wrote it; pass --overwrite to "
                    "replace it, or choose another --output-dir.")
            data = {**identity, "stem": stem, "outputs": {}, "settings": {}, "whisperctl": __version__}
            if _write_record(record, data, exclusive=True):
                chain.add(stem, record, data)
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
    (``--skip-existing``: every output is current), and the inputs refused with why."""

    claims: dict[str, Claim]  # the inputs to transcribe, in order, with their claims
    skipped: int
    problems: list[tuple[str, str]]

    @property
    def todo(self) -> list[str]:
        return list(self.claims)


def plan_outputs(inputs: list[str], directory: Path, formats: list[Any], overwrite: bool = False,
                 skip_existing: bool = False, settings: Mapping[str, Any] | None = None) -> OutputPlan:
    """Claim every input's output names in ``directory`` (exclusively, see the module docstring) and decide what
    to do with outputs that exist: replaced with ``overwrite``; with ``skip_existing``, current ones kept (the
    input skipped when all are) and the others rewritten; else the input is refused (someone's work).

    ``settings``: this run's :func:`output_settings` (None: unknown, so no output counts as current). Temporary
    files that killed writers left in ``directory`` are removed first (:func:`whisperctl.writers.sweep_partial_files`)."""
    extensions = [WRITERS[f][0] for f in formats]
    for folder in (directory, directory / RECORDS_DIR):
        sweep_partial_files(folder, suffixes=_EXTENSIONS)
    outputs = OutputDirectory(directory, extensions)
    plan = OutputPlan({}, 0, [])
    for name in inputs:
        try:
            claim = outputs.claim(name, overwrite=overwrite)
        except OutputError as exc:
            plan.problems.append((name, str(exc)))
            continue
        claim = dataclasses.replace(claim, settings=settings)
        existing = claim.existing() if claim.previous is not None else []
        if skip_existing and existing:
            current = claim.current()
            if len(current) == len(claim.paths):
                plan.skipped += 1
                continue
            claim = dataclasses.replace(claim, keep=frozenset(p.suffix[1:] for p in current))
        if existing and not overwrite and not (skip_existing and claim.verifiable):
            # without --overwrite, outputs are replaced only when they are known to be this input's and not current
            if skip_existing:
                why = "standard input cannot be matched to the outputs of an earlier run; pass --overwrite to replace them."
            else:
                why = "pass --overwrite to replace it or --skip-existing to keep it."
            plan.problems.append((name, f"{existing[0]} exists (this input's, from an earlier run); {why}"))
            continue
        plan.claims[name] = claim
    return plan


def write_outputs(claim: Claim, formats: list[Any], transcript: Any) -> None:
    """Each format's file that is not current already (``claim.keep``), written whole and atomically, then the
    record saying they hold this input's transcript. Their record entries are dropped first, so a process killed
    or a disk filled in between leaves them to be made again, never counted as current."""
    todo = [(WRITERS[f][0], f, p) for f, p in zip(formats, claim.paths) if WRITERS[f][0] not in claim.keep]
    extensions = [ext for ext, _, _ in todo]
    claim.replacing(extensions)
    for _, fmt, path in todo:
        write_atomic(path, WRITERS[fmt][1](transcript))
    claim.written(extensions)


def remove_partial_files(claims: Iterable[Claim]) -> None:
    """Remove the temporary files killed writers left for these claims' outputs and records, whatever their age
    (no live writer holds their lock; the names are these claims', see :func:`whisperctl.writers.sweep_partial_files`)."""
    folders: dict[Path, set[str]] = {}
    for claim in claims:
        for path in (*claim.paths, claim.record):
            folders.setdefault(path.parent, set()).add(path.name)
    for folder, names in folders.items():
        sweep_partial_files(folder, names=names, min_age_s=0.0)
