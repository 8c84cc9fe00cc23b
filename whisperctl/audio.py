"""Decode audio to 16 kHz mono float32, streamed in blocks so long files never sit whole in memory.

wav/flac/ogg/mp3 (and anything else libsndfile reads) go through soundfile; other containers (m4a, mp4, webm,
opus, aac, wma, mkv …) through PyAV (FFmpeg's libraries inside the ``av`` wheel: in process, no ffmpeg binary).
``-`` reads standard input. Both decode block by block and resample with soxr's streaming resampler (channels
averaged, as one rule for every format), so block boundaries leave no seams and memory stays flat.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import sys
from typing import Any, BinaryIO, Iterator

import numpy as np

from .errors import AudioError
from .inputs import STDIN_CLOSED, AudioInput

SAMPLE_RATE = 16_000
_AV_ONLY = frozenset({".m4a", ".mp4", ".webm", ".aac", ".wma", ".mkv", ".mov", ".opus"})  # straight to PyAV
_BLOCK_FRAMES = 1 << 18  # input frames per read (~6 s at 44.1 kHz)
_BLOCK_SAMPLES = 1 << 22  # at most this many samples (frames × channels, 16 MiB of float32) per read
#: Plausible headers. A 1 Hz header turned one read into a 16,000× upsampled 17 GB buffer; no audio format in
#: use records speech below 1 kHz or above 768 kHz, or in more than 256 channels.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 1_000, 768_000
MAX_CHANNELS = 256
#: Piped input (stdin, a FIFO, a process substitution) is read into memory; beyond this, write a file.
MAX_PIPED_BYTES = 4 << 30
#: Float audio is full scale at ±1. Peaks above this are not a few clipped samples but audio on another scale
#: (int16 values stored as float, say), which Whisper turns into invented text: such files are scaled to ±1.
FLOAT_FULL_SCALE_TOLERANCE = 2.0


def _read_pipe(fh: BinaryIO, name: str) -> BinaryIO:
    """The whole of a pipe (stdin, FIFO, process substitution) in memory: decoders need to seek."""
    buf = io.BytesIO()
    while chunk := fh.read(1 << 20):
        buf.write(chunk)
        if buf.tell() > MAX_PIPED_BYTES:
            raise AudioError(f"{name}: more than {MAX_PIPED_BYTES >> 30} GiB through a pipe; write it to a file first.")
    if buf.tell() == 0:
        raise AudioError(f"{name}: no data (the pipe was empty).")
    buf.seek(0)
    return buf




def _open_stdin() -> BinaryIO:
    if sys.stdin is None:  # `whisperctl transcribe - <&-`: Python sets sys.stdin to None
        raise AudioError(f"-: {STDIN_CLOSED}")
    if stdin_is_terminal():
        raise AudioError(f"-: {STDIN_TERMINAL}")
    return _read_pipe(sys.stdin.buffer, "-")


STDIN_TERMINAL = ("standard input is a terminal, not audio: pipe audio in (cat talk.wav | whisperctl transcribe -) "
                  "or name the files.")


def stdin_is_terminal() -> bool:
    """Whether ``-`` would read a terminal (it would wait for keystrokes, silently)."""
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, OSError):  # closed or detached
        return False


def duration_seconds(source: AudioInput) -> float | None:
    """Duration from the header when soundfile can read it (cheap); None otherwise."""
    if source.path is None or not source.path.is_file():  # a FIFO must not be read twice
        return None
    import soundfile as sf

    try:
        info = sf.info(os.fsencode(source.path))
    except Exception:  # noqa: BLE001 - any decoder failure just means "unknown here"
        return None
    return info.frames / info.samplerate if info.samplerate and info.frames > 0 else None


def stream(source: AudioInput, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the whole input. Raises :class:`AudioError` naming the input."""
    piped = _check_readable(source)
    if source.path is not None and not piped and source.path.suffix.lower() in _AV_ONLY:
        yield from _stream_av(source, None, block_seconds)
        return
    if source.path is None:
        data: BinaryIO | None = _open_stdin()
    elif piped:  # a FIFO or <(…): read it once, like stdin
        try:
            with open(source.path, "rb") as fh:
                data = _read_pipe(fh, source.name)
        except OSError as exc:
            raise AudioError(f"{source.name}: cannot read: {exc.strerror or exc}.") from None
    else:
        data = None
    try:
        yield from _stream_soundfile(source, data, block_seconds)
    except _NotSoundfile:
        if data is not None:
            data.seek(0)
        produced = False
        try:
            for block in _stream_av(source, data, block_seconds):
                produced = True
                yield block
        except AudioError:
            overrun = None if produced else _id3_overrun(source, data)
            if overrun is None:
                raise
            raise AudioError(f"{source.name}: {overrun}") from None


def load(source: AudioInput | str | os.PathLike) -> np.ndarray:
    """The whole input as one 16 kHz mono float32 array (for short clips and tests)."""
    src = source if isinstance(source, AudioInput) else AudioInput.from_arg(source)
    blocks = list(stream(src))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


class _NotSoundfile(Exception):
    pass


def _id3_overrun(source: AudioInput, data: BinaryIO | None) -> str | None:
    """Why an MP3 that no decoder could open has no audio, when its ID3v2 tag says it is larger than the whole file
    (libsndfile then says "File does not exist", FFmpeg "Invalid data"); None when the tag is not the reason."""
    try:
        if data is not None:
            data.seek(0)
            head, size = data.read(10), data.seek(0, os.SEEK_END)
            data.seek(0)
        else:
            with open(os.fsencode(source.path), "rb") as fh:
                head, size = fh.read(10), os.fstat(fh.fileno()).st_size
    except OSError:
        return None
    if len(head) < 10 or head[:3] != b"ID3" or head[3] == 0xFF or any(b & 0x80 for b in head[6:10]):
        return None
    claimed = 0
    for byte in head[6:10]:  # a "synchsafe" integer: 7 bits a byte
        claimed = claimed << 7 | byte
    if 10 + claimed <= size:
        return None
    return (f"its ID3 tag claims {claimed} bytes ({claimed / 2**20:.1f} MiB) but the whole file has {size}, so no "
            "audio follows the tag; the file is truncated or corrupt.")


def _check_readable(source: AudioInput) -> bool:
    """Raise :class:`AudioError` for an input that cannot be audio; True when it is a FIFO (read like stdin)."""
    p = source.path
    if p is None:
        return False
    if not p.exists():
        raise AudioError(f"{source.name}: no such file.")
    if p.is_dir():
        raise AudioError(f"{source.name}: is a directory; pass the directory itself as an input to scan it.")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{source.name}: permission denied; make it readable (chmod +r).")
    st = p.stat()
    if stat.S_ISFIFO(st.st_mode):
        return True
    if not stat.S_ISREG(st.st_mode):
        kind = ("a character device" if stat.S_ISCHR(st.st_mode) else "a block device" if stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a regular file")
        raise AudioError(f"{source.name}: {kind}, not an audio file; pass a file, a FIFO or - (stdin).")
    if st.st_size == 0:
        raise AudioError(f"{source.name}: empty file (0 bytes).")
    return False


def _checked(block: np.ndarray, source: AudioInput) -> np.ndarray:
    if not np.isfinite(block).all():
        raise AudioError(f"{source.name}: contains NaN or infinite samples; the file is corrupt.")
    return block


def _stream_soundfile(source: AudioInput, data: BinaryIO | None, block_seconds: float) -> Iterator[np.ndarray]:
    import soundfile as sf
    import soxr

    target = data if data is not None else os.fsencode(source.path)  # bytes: names that are not UTF-8 open too
    try:
        fh = sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _NotSoundfile(str(exc).splitlines()[0] if str(exc) else "unrecognised format") from None
    except OSError as exc:
        raise AudioError(f"{source.name}: cannot read: {exc.strerror or exc}.") from None
    repaired = _repair_unfinished_wav(source, data) if fh.frames == 0 and fh.format in ("WAV", "WAVEX") else None
    if repaired is not None:
        fh.close()
        fh = sf.SoundFile(repaired)
    with fh, repaired or contextlib.nullcontext():
        rate, channels = fh.samplerate, fh.channels
        if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
            raise AudioError(f"{source.name}: the header says {rate} Hz, outside the plausible "
                             f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz; the file is corrupt or not audio.")
        if not 1 <= channels <= MAX_CHANNELS:
            raise AudioError(f"{source.name}: the header says {channels} channels (at most {MAX_CHANNELS} are read); "
                             "the file is corrupt.")
        scale = _float_scale(fh, source)
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if rate != SAMPLE_RATE else None
        frames = max(1024, min(max(_BLOCK_FRAMES, int(rate * block_seconds)), _BLOCK_SAMPLES // channels))
        declared, read = (fh.frames if repaired is None else 0), 0
        before = _file_state(source) if data is None else None
        while True:
            try:
                block = fh.read(frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{source.name}: decoding failed mid-file ({exc}); the file is truncated or corrupt.") from None
            last = len(block) < frames
            read += len(block)
            mono = _checked(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0], source)
            if scale != 1.0:
                mono = mono * np.float32(scale)
            out = resampler.resample_chunk(mono, last=last) if resampler else mono
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break
    _warn_if_changed(source, before, f"{read} of the {declared} frames its header declares" if 0 < read < declared else None)


def _file_state(source: AudioInput) -> tuple[int, int] | None:
    """(size, modification time in ns) of a regular file input, to tell whether it changes while read."""
    try:
        st = os.stat(source.path) if source.path is not None else None
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns) if st is not None and stat.S_ISREG(st.st_mode) else None


def _warn_if_changed(source: AudioInput, before: tuple[int, int] | None, short: str | None = None) -> None:
    """Say once when the input changed while it was read (a recorder still writing it, a copy in progress, an
    edit): the transcript then covers the audio as it was read, which may end early."""
    after = _file_state(source) if before is not None else None
    if before is None or (after == before and short is None):
        return
    import logging

    what = (f"{before[0]} bytes when opened, {after[0]} now" if after is not None and after[0] != before[0]
            else "modified" if after != before else short)
    logging.getLogger("whisperctl").warning(
        "%s: the input changed while it was read (%s); the transcript covers the audio as it was read and may end "
        "early: run again once the file is complete.", source.name, what)

def _repair_unfinished_wav(source: AudioInput, data: BinaryIO | None) -> BinaryIO | None:
    """A WAV whose data chunk says 0 bytes while audio follows it (a recorder that died before it wrote the final
    sizes): the file seen through a header that counts the bytes that are there, as ffmpeg reads it; said once
    as a warning. None when the header is not such a WAV or nothing follows it.

    libsndfile already reads to the end of the file when the size is 0xFFFFFFFF (streaming recorders) or larger
    than the file, and ignores a wrong RIFF size; only the 0 case reads as silence."""
    import struct

    fh = data if data is not None else open(os.fsencode(source.path), "rb")  # noqa: SIM115 - owned by the view
    try:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(0)
        head = fh.read(1 << 16)
    except OSError:
        head, size = b"", 0
    view = None
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        pos, block_align = 12, 1
        while pos + 8 <= len(head):
            chunk, length = head[pos:pos + 4], struct.unpack_from("<I", head, pos + 4)[0]
            if chunk == b"fmt " and pos + 22 <= len(head):
                block_align = max(struct.unpack_from("<H", head, pos + 20)[0], 1)
            if chunk == b"data":
                audio_bytes = min(size - pos - 8, 0xFFFFFFFF) // block_align * block_align
                if length == 0 and audio_bytes > 0:
                    patched = bytearray(head[:pos + 8])
                    patched[4:8] = struct.pack("<I", min(size - 8, 0xFFFFFFFF))
                    patched[pos + 4:pos + 8] = struct.pack("<I", audio_bytes)
                    view = _PatchedHead(fh, bytes(patched), size)
                break
            pos += 8 + length + (length & 1)
    if view is None:
        if data is None:
            fh.close()
        else:
            data.seek(0)
        return None
    import logging

    logging.getLogger("whisperctl").warning(
        "%s: the WAV header says it holds no audio, but %d bytes follow it (a recording that stopped before its "
        "header was finished); reading them, as ffmpeg does.", source.name, size - len(view.head))
    return view


class _PatchedHead(io.RawIOBase):
    """A read-only view of a file with its first bytes replaced (a repaired header of the same length)."""

    def __init__(self, fh: BinaryIO, head: bytes, size: int):
        self.fh, self.head, self.size, self.pos = fh, head, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(base + offset, 0)
        return self.pos

    def readinto(self, buf) -> int:
        view = memoryview(buf).cast("B")
        n = 0
        if self.pos < len(self.head):
            n = min(len(view), len(self.head) - self.pos)
            view[:n] = self.head[self.pos:self.pos + n]
        if n < len(view):
            self.fh.seek(self.pos + n)
            n += self.fh.readinto(view[n:]) or 0
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed and not isinstance(self.fh, io.BytesIO):
            self.fh.close()
        super().close()


def _float_scale(fh, source: AudioInput) -> float:
    """1.0, or the factor that brings float audio recorded on another scale back to ±1 (said once as a warning).

    Only float subtypes can exceed ±1; their peak is found by one extra pass over the file (float PCM reads at
    well over 1 GB/s, so it costs little next to decoding)."""
    if fh.subtype not in ("FLOAT", "DOUBLE") or not fh.seekable():
        return 1.0
    peak = 0.0
    while True:
        block = fh.read(_BLOCK_SAMPLES // fh.channels, dtype="float32")
        if not len(block):
            break
        finite = block[np.isfinite(block)]
        if finite.size:
            peak = max(peak, float(np.abs(finite).max()))
    fh.seek(0)
    return full_scale_factor(peak, source.name)


def full_scale_factor(peak: float, name: str) -> float:
    """1.0 for float audio whose peak is within :data:`FLOAT_FULL_SCALE_TOLERANCE`; otherwise ``1 / peak``, said
    once as a warning. The one rule for float files and for arrays handed to the library."""
    if peak <= FLOAT_FULL_SCALE_TOLERANCE:
        return 1.0
    import logging

    logging.getLogger("whisperctl").warning(
        "%s: float samples reach ±%.4g, far beyond full scale ±1 (audio on another scale, or noise); scaled by "
        "1/%.4g so Whisper hears it at full scale.", name, peak, peak)
    return 1.0 / peak


def _stream_av(source: AudioInput, data: BinaryIO | None, block_seconds: float) -> Iterator[np.ndarray]:
    """Decode the first audio stream of any container FFmpeg reads (m4a, mp4, webm, opus, aac, wma, mkv …) with
    PyAV, in process: frames converted to float, channels averaged and resampled as the soundfile path does,
    yielded in blocks of about ``block_seconds``."""
    try:
        import av
        import av.error
    except ImportError:  # a dependency; only a broken installation lacks it
        raise AudioError(f"{source.name}: not a format libsndfile reads, and PyAV is not installed to decode it; "
                         "pip install av (or reinstall whisperctl), or convert the file to wav/flac.") from None
    import soxr

    target: Any = data if data is not None else os.fsdecode(source.path)
    try:
        container = av.open(target, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        raise AudioError(f"{source.name}: not an audio file FFmpeg can read ({_av_reason(exc)}); the file is corrupt "
                         "or not audio.") from None
    except OSError as exc:
        raise AudioError(f"{source.name}: cannot read: {exc.strerror or exc}.") from None
    with container:
        if not container.streams.audio:
            kinds = sorted({s.type for s in container.streams}) or ["no streams"]
            raise AudioError(f"{source.name}: no audio stream in this file ({', '.join(kinds)} only); nothing to "
                             "transcribe.")
        stream = container.streams.audio[0]
        converter = av.AudioResampler(format="fltp")  # float planes; the layout and rate as they are
        before = _file_state(source) if data is None else None
        resampler = None
        rate = 0
        pending: list[np.ndarray] = []
        held = 0
        decoded = 0
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for plane in converter.resample(frame):
                        block = plane.to_ndarray()  # (channels, samples)
                        if rate == 0:
                            rate = plane.sample_rate
                            if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
                                raise AudioError(f"{source.name}: the stream says {rate} Hz, outside the plausible "
                                                 f"{MIN_SAMPLE_RATE}–{MAX_SAMPLE_RATE} Hz; the file is corrupt.")
                            if rate != SAMPLE_RATE:
                                resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
                        mono = block.mean(axis=0, dtype=np.float32) if block.shape[0] > 1 else block[0].astype(np.float32)
                        pending.append(_checked(mono, source))
                        held += len(mono)
                        decoded += len(mono)
                        if held >= rate * block_seconds:
                            out = _joined(pending, resampler, last=False)
                            pending, held = [], 0
                            if len(out):
                                yield out
        except av.error.FFmpegError as exc:
            if decoded == 0:
                raise AudioError(f"{source.name}: FFmpeg could not decode its audio ({_av_reason(exc)}); the file is "
                                 "corrupt.") from None
            raise AudioError(f"{source.name}: decoding failed mid-file ({_av_reason(exc)}); the file is truncated or "
                             "corrupt.") from None
        if decoded == 0:
            raise AudioError(f"{source.name}: its audio stream holds no samples; the file is empty or corrupt.")
        out = _joined(pending, resampler, last=True)
        if len(out):
            yield out
    _warn_if_changed(source, before)


def _joined(blocks: list[np.ndarray], resampler: Any, last: bool) -> np.ndarray:
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    out = resampler.resample_chunk(mono, last=last) if resampler is not None else mono
    return np.ascontiguousarray(out, dtype=np.float32)


def _av_reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return " ".join(str(text).split()) or type(exc).__name__
