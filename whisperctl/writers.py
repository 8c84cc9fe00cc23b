"""One writer per output format, chosen by name; srt/vtt/tsv as openai-whisper writes them.

:func:`write_atomic` puts a file in place with one rename, so an interrupted or failing run never
leaves a half-written output behind.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

from .config import OutputFormat
from .errors import OutputError
from .results import Segment, Transcript


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    ms = int(round(max(seconds, 0.0) * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    prefix = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{prefix}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def _cue_text(seg: Segment) -> str:
    return seg.text.strip().replace("-->", "->")  # an arrow in the text would end an srt/vtt cue line


def _cues(t: Transcript):
    for seg in t.segments:
        text = _cue_text(seg)
        if text:
            yield seg.start, seg.end, text


class SegmentStream:
    """txt, srt or vtt written segment by segment, as they settle (the whole-file writers use it too)."""

    FORMATS = (OutputFormat.TXT, OutputFormat.SRT, OutputFormat.VTT)

    def __init__(self, fmt: OutputFormat):
        if fmt not in self.FORMATS:
            raise ValueError(f"{fmt.value} is not written segment by segment")
        self.fmt, self.count = fmt, 0

    def header(self) -> str:
        return "WEBVTT\n\n" if self.fmt == OutputFormat.VTT else ""

    def segment(self, seg: Segment) -> str:
        text = _cue_text(seg) if self.fmt != OutputFormat.TXT else seg.text.strip()
        if not text:
            return ""
        self.count += 1
        if self.fmt == OutputFormat.TXT:
            return text + "\n"
        if self.fmt == OutputFormat.SRT:
            return f"{self.count}\n{format_timestamp(seg.start, True, ',')} --> {format_timestamp(seg.end, True, ',')}\n{text}\n\n"
        return f"{format_timestamp(seg.start)} --> {format_timestamp(seg.end)}\n{text}\n\n"


def _whole(fmt: OutputFormat, t: Transcript) -> str:
    stream = SegmentStream(fmt)
    return stream.header() + "".join(stream.segment(seg) for seg in t.segments)


def to_txt(t: Transcript) -> str:
    if not t.segments:
        return (t.text.strip() + "\n") if t.text.strip() else ""
    return _whole(OutputFormat.TXT, t)


def to_srt(t: Transcript) -> str:
    return _whole(OutputFormat.SRT, t)


def to_vtt(t: Transcript) -> str:
    return _whole(OutputFormat.VTT, t)


def to_tsv(t: Transcript) -> str:
    rows = "".join(f"{int(round(s * 1000))}\t{int(round(e * 1000))}\t{text}\n" for s, e, text in _cues(t))
    return "start\tend\ttext\n" + rows


def to_json(t: Transcript) -> str:
    return json.dumps(t.to_dict(), ensure_ascii=False, indent=2) + "\n"


WRITERS: dict[OutputFormat, tuple[str, Callable[[Transcript], str]]] = {
    OutputFormat.TXT: ("txt", to_txt),
    OutputFormat.SRT: ("srt", to_srt),
    OutputFormat.VTT: ("vtt", to_vtt),
    OutputFormat.TSV: ("tsv", to_tsv),
    OutputFormat.JSON: ("json", to_json),
}


def expand_formats(fmt: OutputFormat) -> list[OutputFormat]:
    return list(WRITERS) if fmt == OutputFormat.ALL else [fmt]


_UNSAFE = re.compile(r"[^A-Za-z0-9._ -]+")


def safe_stem(stem: str) -> str:
    """A file name stem that cannot leave the output directory, hide as a dotfile or read as an option (a leading
    ``-``: ``--help.txt`` is a file that ``rm`` or ``cat`` take for a flag)."""
    cleaned = _UNSAFE.sub("_", stem).strip(" .") or "audio"
    dashes = len(cleaned) - len(cleaned.lstrip("-"))
    return ("_" * dashes + cleaned[dashes:])[:200]


def write_atomic(path: Path, content: str, exclusive: bool = False) -> bool:
    """Write ``content`` to ``path`` via a temporary file in the same directory and one rename.

    ``exclusive``: create ``path`` only if it does not exist (a hard link, atomic and complete when visible;
    an ``O_EXCL`` create where hard links are unsupported) and return False when it exists — a claim that
    concurrent processes cannot both win. Otherwise ``path`` is replaced and the result is True.

    The temporary file (``.NAME.XXXXXXXX.part``) is locked (``flock``) until it is renamed, so
    :func:`sweep_partial_files` can tell one a killed writer left from one a live writer is filling.

    Only regular files are replaced: renaming over ``/dev/full`` (as root) would swap a device for a file. Text
    that cannot be UTF-8 (a file name that is not, kept by Python as surrogates) is written as ``\\udcff``
    escapes, which JSON readers turn back into the same name."""
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise OutputError(f"{path}: exists and is not a regular file; whisperctl replaces only files.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot write outputs here: {exc.strerror or exc}.") from None
    fh = os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace")
    try:
        _lock(fd)  # held until the rename, when the file is closed
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the mode any new file would get
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        created = _create_exclusively(tmp, path)
        if os.path.exists(tmp):
            os.unlink(tmp)
        return created
    except BaseException as exc:  # also Ctrl-C / SIGTERM: never leave a partial file behind
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if not isinstance(exc, OSError):
            raise
        hint = " (disk full)" if exc.errno == errno.ENOSPC else ""
        raise OutputError(f"{path}: write failed{hint}: {exc.strerror or exc}.") from None
    finally:
        try:
            fh.close()
        except OSError:  # the data that could not be flushed belongs to a file already removed
            pass


PART_SUFFIX = ".part"
#: a temporary file this old that nobody holds the lock of was left by a killed writer (a live one locks its file
#: microseconds after creating it, and holds the lock until it renames it)
STALE_PART_S = 60.0
_PART_NAME = re.compile(r"^\.(?P<target>.+)\.[A-Za-z0-9_]{8}" + re.escape(PART_SUFFIX) + "$")  # mkstemp's 8 characters
#: where ``flock`` is not supported, only files a day old are taken for a killed writer's
_UNLOCKABLE_STALE_S = 86_400.0


def sweep_partial_files(directory: Path, names: set[str] | None = None, suffixes: Iterable[str] = (),
                        min_age_s: float = STALE_PART_S) -> int:
    """Remove the temporary files :func:`write_atomic` left behind when its process was killed (SIGKILL, a power
    cut): ``.NAME.XXXXXXXX.part`` for a target ``NAME`` in ``names``, or one ending in one of ``suffixes``
    (``txt``, ``json`` …), older than ``min_age_s`` and not locked. A live writer holds its file's lock, so
    its file is never removed, even by another process or machine sharing the directory (where ``flock``
    reaches it). One directory scan; returns how many files were removed."""
    suffixes = tuple(f".{s}" for s in suffixes)
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return 0
    now = time.time()
    removed = 0
    for entry in entries:
        match = _PART_NAME.match(entry.name)
        if match is None:
            continue
        target = match["target"]
        if not (target in names if names is not None else target.endswith(suffixes)):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
            if not entry.is_file(follow_symlinks=False) or age < min_age_s:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            except OSError:  # no locks on this filesystem: only age can tell
                if age < max(min_age_s, _UNLOCKABLE_STALE_S):
                    continue
            os.unlink(entry.path)
            removed += 1
        except OSError:
            pass  # renamed or removed meanwhile
        finally:
            os.close(fd)
    return removed


def _lock(fd: int) -> None:
    """Mark a temporary file as being written (see :func:`sweep_partial_files`); best effort: a filesystem
    without locks leaves the sweep to the file's age."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass


#: errno values of filesystems without hard links (FAT, some network filesystems)
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EXDEV}


def _create_exclusively(tmp: str, path: Path) -> bool:
    """Put the complete file ``tmp`` at ``path`` unless ``path`` exists (then False)."""
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except FileExistsError:
        return False
    os.replace(tmp, path)
    return True


def _umask() -> int:
    """The process umask (read by setting it, so set it straight back; whisperctl writes from one thread)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
