"""Decode audio to 16 kHz mono float32, streamed in blocks so long files never sit whole in memory.

wav/flac/ogg/mp3 (and anything else libsndfile reads) go through soundfile; other containers (m4a, mp4,
webm …) through ffmpeg when it is on PATH. ``-`` reads standard input. Resampling uses soxr's streaming
resampler, so block boundaries leave no seams.
"""

from __future__ import annotations

import dataclasses
import glob
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 16_000
#: Extensions picked up when a directory is given as input.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".mp4", ".webm", ".aac", ".wma", ".mkv", ".aiff", ".aif"}
)
_FFMPEG_ONLY = frozenset({".m4a", ".mp4", ".webm", ".aac", ".wma", ".mkv"})
_BLOCK_FRAMES = 1 << 18  # input frames per read (~6 s at 44.1 kHz)


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
    """Files, directories (recursive, audio extensions), globs and ``-`` → (inputs, problems)."""
    inputs: list[str] = []
    problems: list[tuple[str, str]] = []
    for arg in args:
        path = Path(arg)
        if arg == "-":
            inputs.append(arg)
        elif path.is_dir():
            found = sorted(str(p) for p in path.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                problems.append((arg, f"directory has no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})."))
            inputs.extend(found)
        elif not path.exists() and any(ch in arg for ch in "*?["):
            found = sorted(p for p in glob.glob(arg, recursive=True) if Path(p).is_file())
            if not found:
                problems.append((arg, "the pattern matches no file."))
            inputs.extend(found)
        else:
            inputs.append(arg)  # missing files are reported per file by the engine
    return inputs, problems


def _open_stdin() -> BinaryIO:
    return io.BytesIO(sys.stdin.buffer.read())


def duration_seconds(source: AudioInput) -> float | None:
    """Duration from the header when soundfile can read it (cheap); None otherwise."""
    if source.path is None:
        return None
    import soundfile as sf

    try:
        info = sf.info(str(source.path))
    except Exception:  # noqa: BLE001 - any decoder failure just means "unknown here"
        return None
    return info.frames / info.samplerate if info.samplerate and info.frames > 0 else None


def stream(source: AudioInput, block_seconds: float = 30.0) -> Iterator[np.ndarray]:
    """Yield 16 kHz mono float32 blocks of the whole input. Raises :class:`AudioError` naming the input."""
    _check_readable(source)
    if source.path is not None and source.path.suffix.lower() in _FFMPEG_ONLY:
        yield from _stream_ffmpeg(source)
        return
    data = _open_stdin() if source.path is None else None
    try:
        yield from _stream_soundfile(source, data, block_seconds)
    except _NotSoundfile as exc:
        if shutil.which("ffmpeg") is None:
            raise AudioError(
                f"{source.name}: not a format libsndfile can read ({exc}); install ffmpeg to decode it "
                "(e.g. apt-get install ffmpeg), or convert it to wav/flac."
            ) from None
        if data is not None:
            data.seek(0)
        yield from _stream_ffmpeg(source, data)


def load(source: AudioInput | str | os.PathLike) -> np.ndarray:
    """The whole input as one 16 kHz mono float32 array (for short clips and tests)."""
    src = source if isinstance(source, AudioInput) else AudioInput.from_arg(source)
    blocks = list(stream(src))
    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)


class _NotSoundfile(Exception):
    pass


def _check_readable(source: AudioInput) -> None:
    p = source.path
    if p is None:
        return
    if not p.exists():
        raise AudioError(f"{source.name}: no such file.")
    if p.is_dir():
        raise AudioError(f"{source.name}: is a directory; pass the directory itself as an input to scan it.")
    if not os.access(p, os.R_OK):
        raise AudioError(f"{source.name}: permission denied; make it readable (chmod +r).")
    if p.stat().st_size == 0:
        raise AudioError(f"{source.name}: empty file (0 bytes).")


def _checked(block: np.ndarray, source: AudioInput) -> np.ndarray:
    if not np.isfinite(block).all():
        raise AudioError(f"{source.name}: contains NaN or infinite samples; the file is corrupt.")
    return block


def _stream_soundfile(source: AudioInput, data: BinaryIO | None, block_seconds: float) -> Iterator[np.ndarray]:
    import soundfile as sf
    import soxr

    target = data if data is not None else str(source.path)
    try:
        fh = sf.SoundFile(target)
    except (sf.LibsndfileError, RuntimeError, TypeError) as exc:
        raise _NotSoundfile(str(exc).splitlines()[0] if str(exc) else "unrecognised format") from None
    except OSError as exc:
        raise AudioError(f"{source.name}: cannot read: {exc.strerror or exc}.") from None
    with fh:
        rate = fh.samplerate
        if rate <= 0:
            raise AudioError(f"{source.name}: invalid sample rate {rate}.")
        resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ") if rate != SAMPLE_RATE else None
        frames = max(_BLOCK_FRAMES, int(rate * block_seconds))
        while True:
            try:
                block = fh.read(frames, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as exc:
                raise AudioError(f"{source.name}: decoding failed mid-file ({exc}); the file is truncated or corrupt.") from None
            last = len(block) < frames
            mono = _checked(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0], source)
            out = resampler.resample_chunk(mono, last=last) if resampler else mono
            if len(out):
                yield np.ascontiguousarray(out, dtype=np.float32)
            if last:
                break


def _stream_ffmpeg(source: AudioInput, data: BinaryIO | None = None) -> Iterator[np.ndarray]:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise AudioError(
            f"{source.name}: this container needs ffmpeg, which is not on PATH; install ffmpeg "
            "(e.g. apt-get install ffmpeg) or convert the file to wav/flac."
        )
    cmd = [exe, "-nostdin", "-v", "error", "-i", "pipe:0" if source.path is None else str(source.path),
           "-vn", "-f", "f32le", "-ac", "1", "-ar", str(SAMPLE_RATE), "pipe:1"]
    if source.path is None:
        cmd.remove("-nostdin")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    if data is not None:
        import threading

        def feed() -> None:
            try:
                proc.stdin.write(data.read())  # type: ignore[union-attr]
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass

        threading.Thread(target=feed, daemon=True).start()
    produced = 0
    try:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(SAMPLE_RATE * 4 * 30):
            usable = len(chunk) - len(chunk) % 4
            block = np.frombuffer(chunk[:usable], dtype=np.float32)
            produced += len(block)
            yield _checked(block.copy(), source)
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0 or produced == 0:
            reason = err.splitlines()[-1] if err else "no audio stream"
            raise AudioError(f"{source.name}: ffmpeg could not decode it: {reason}.")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
