"""Inputs: what the user named (files, directories, globs, ``-``) as a list of inputs, and what identifies one.

Decoding an input's audio is :mod:`whisperctl.audio`'s; this module only finds inputs and names them: directories
are walked recursively for audio extensions, globs expanded (``**`` included, without looping through links),
an input named twice is kept once, and :func:`input_identity` fingerprints a file's content (what
``--skip-existing`` and the journals compare).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

#: Extensions picked up when a directory is given as input.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".webm", ".aac", ".wma", ".mkv", ".aiff", ".aif"}
)

STDIN_CLOSED = "standard input is closed; pipe the audio in (cat clip.wav | whisperctl transcribe -) or name a file."


@dataclasses.dataclass(frozen=True)
class AudioInput:
    """One input: a file path, or ``-`` for standard input."""

    name: str  # what the user typed; used in messages and output names
    path: Path | None  # None for stdin

    @classmethod
    def from_arg(cls, arg: str | os.PathLike) -> "AudioInput":
        text = os.fspath(arg)
        return cls("-", None) if text == "-" else cls(text, Path(text))

    @property
    def stem(self) -> str:
        return "stdin" if self.path is None else self.path.stem


def expand_inputs(args: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, directories (recursive, audio extensions), globs and ``-`` → (inputs, problems).

    Directories and ``**`` globs are walked following symbolic links, but each real directory is entered once
    and each real file is listed once, so a link to ``..`` or two links into one tree neither loop nor repeat
    an input. An input named twice on the command line is transcribed once.
    """
    inputs: list[str] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(name: str) -> None:
        key = os.path.realpath(name) if name != "-" else "-"
        if key not in seen:
            seen.add(key)
            inputs.append(name)

    for arg in args:
        path = Path(arg)
        if arg == "-":
            if sys.stdin is None:
                problems.append((arg, STDIN_CLOSED))
            else:
                add(arg)
        elif path.is_dir():
            found = [f for f in _walk(path) if Path(f).suffix.lower() in AUDIO_EXTENSIONS]
            if not found:
                problems.append((arg, f"directory has no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})."))
            for f in found:
                add(f)
        elif not path.exists() and any(ch in arg for ch in "*?["):
            found = _glob(arg)
            if not found:
                problems.append((arg, "the pattern matches no file."))
            for f in found:
                add(f)
        else:
            add(arg)  # missing files are reported per file by the engine
    return inputs, problems


def _walk(root: Path) -> list[str]:
    """Every file under ``root``, sorted, following links but entering each real directory once."""
    out: list[str] = []
    visited: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        # real subdirectories before links, so a file is named by its real path when a link also reaches it
        dirnames[:] = sorted((d for d in dirnames if os.path.realpath(os.path.join(dirpath, d)) not in visited),
                             key=lambda d: (os.path.islink(os.path.join(dirpath, d)), d))
        out.extend(os.path.join(dirpath, f) for f in filenames if os.path.isfile(os.path.join(dirpath, f)))
    return sorted(out)



def _glob(pattern: str) -> list[str]:
    """``glob`` with ``**`` walked with :func:`_walk`'s loop protection (the standard glob follows a link to ``..``
    until the path is too long, and with two such links never finishes). Each path component is matched with
    :func:`fnmatch.fnmatchcase`; ``**`` matches any number of directories; hidden names match only explicitly."""
    parts = Path(pattern).parts
    fixed = next((i for i, part in enumerate(parts) if any(ch in part for ch in "*?[")), len(parts))
    if "**" not in parts[fixed:]:
        return sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    base = os.path.join(*parts[:fixed]) if fixed else "."
    if not os.path.isdir(base):
        return []
    out = []
    for f in _walk(Path(base)):
        name = f[2:] if not fixed and f.startswith("./") else f
        if _matches(Path(name).parts, parts):
            out.append(name)
    return out


def _matches(name: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether the path components ``name`` match the glob components ``pattern`` (``**``: zero or more
    components; a name starting with ``.`` only where the pattern's component does)."""
    if not pattern:
        return not name
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return _matches(name, rest) or (bool(name) and not name[0].startswith(".") and _matches(name[1:], pattern))
    if not name or (name[0].startswith(".") and not head.startswith(".")):
        return False
    return fnmatch.fnmatchcase(name[0], head) and _matches(name[1:], rest)


def input_identity(name: str) -> dict[str, Any]:
    """What identifies an input across runs and machines: its real path, size and a content fingerprint.

    The fingerprint is a BLAKE2b digest of the size and every byte, streamed in 1 MiB reads: any edit changes it
    (a sampled hash missed most same-size edits, such as a bleep or a zeroed minute in the middle), a copied or
    moved file keeps it. It costs a read of the file, about 2 s per GB on 2 cores (docs/reliability.md), far
    less than decoding it. Standard input, FIFOs and other non-regular files have no fingerprint (opening a FIFO
    would wait for a writer, and reading it would take the audio away)."""
    if name == "-":
        return {"input": "-", "size": None, "fingerprint": None}
    path = os.path.realpath(name)
    unknown = {"input": path, "size": None, "fingerprint": None}
    if not os.path.isfile(path):
        return unknown
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            digest = hashlib.blake2b(f"v2:{size}".encode(), digest_size=16)
            while chunk := fh.read(_FINGERPRINT_READ):
                digest.update(chunk)
    except OSError:
        return unknown
    return {"input": path, "size": size, "fingerprint": digest.hexdigest()}


_FINGERPRINT_READ = 1 << 20


