"""One writer per output format, chosen by name; srt/vtt/tsv as openai-whisper writes them.

:func:`write_atomic` puts a file in place with one rename, so an interrupted or failing run never
leaves a half-written output behind.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable

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
    """A file name stem that cannot leave the output directory or hide as a dotfile."""
    cleaned = _UNSAFE.sub("_", stem).strip(" .") or "audio"
    return cleaned[:200]


def write_atomic(path: Path, content: str, exclusive: bool = False) -> bool:
    """Write ``content`` to ``path`` via a temporary file in the same directory and one rename.

    ``exclusive``: create ``path`` only if it does not exist (a hard link, atomic and complete when visible;
    an ``O_EXCL`` create where hard links are unsupported) and return False when it exists — a claim that
    concurrent processes cannot both win. Otherwise ``path`` is replaced and the result is True.

    Only regular files are replaced: renaming over ``/dev/full`` (as root) would swap a device for a file. Text
    that cannot be UTF-8 (a file name that is not, kept by Python as surrogates) is written as ``\\udcff``
    escapes, which JSON readers turn back into the same name."""
    if (path.exists() or path.is_symlink()) and not path.is_file():
        raise OutputError(f"{path}: exists and is not a regular file; whisperctl replaces only files.")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path.parent}: cannot write outputs here: {exc.strerror or exc}.") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the mode any new file would get
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
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
