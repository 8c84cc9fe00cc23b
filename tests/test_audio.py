import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from whisperctl import audio
from whisperctl.errors import AudioError


def _tone(sr, seconds=1.0, channels=1):
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    return np.repeat(x[:, None], channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100, 48000, 96000])
def test_any_rate_to_16k(tmp_path, sr):
    p = tmp_path / f"t{sr}.wav"
    sf.write(p, _tone(sr, 1.5), sr)
    y = audio.load(p)
    assert y.dtype == np.float32 and abs(len(y) - 24000) <= 2
    assert 0.3 < np.abs(y).max() < 0.6


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_pcm_subtypes_and_six_channels(tmp_path, subtype):
    p = tmp_path / "six.wav"
    sf.write(p, _tone(16000, 1.0, channels=6), 16000, subtype=subtype)
    y = audio.load(p)
    assert len(y) == 16000 and 0.4 < np.abs(y).max() < 0.6


@pytest.mark.parametrize("fmt", ["FLAC", "OGG", "MP3"])
def test_compressed_formats(tmp_path, fmt):
    p = tmp_path / f"x.{fmt.lower()}"
    sf.write(p, _tone(44100, 2.0), 44100, format=fmt)
    y = audio.load(p)
    assert abs(len(y) - 32000) < 2000


def test_streaming_matches_whole_file(tmp_path):
    p = tmp_path / "long.wav"
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 44100 * 20).astype(np.float32)
    sf.write(p, x, 44100, subtype="FLOAT")
    blocks = list(audio.stream(audio.AudioInput.from_arg(p), block_seconds=3.0))
    assert len(blocks) > 3
    import soxr

    whole = soxr.resample(x, 44100, 16000, quality="HQ")
    np.testing.assert_allclose(np.concatenate(blocks)[: len(whole)], whole[: sum(map(len, blocks))], atol=1e-3)


def test_stdin(tmp_path, monkeypatch):
    buf = io.BytesIO()
    sf.write(buf, _tone(16000, 1.0), 16000, format="WAV")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(buf.getvalue())))
    assert len(audio.load("-")) == 16000


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("hello, I am text pretending to be audio\n" * 20), "install ffmpeg|ffmpeg could not decode"),
        (lambda p: p.write_bytes(open(p.parent / "ok.wav", "rb").read()[:30]), "truncated|corrupt|ffmpeg|not a format"),
    ],
)
def test_bad_files_raise_audio_error_naming_the_file(tmp_path, make, fragment):
    sf.write(tmp_path / "ok.wav", _tone(16000), 16000)
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(AudioError) as err:
        audio.load(p)
    import re

    assert str(err.value).startswith(str(p)) and re.search(fragment, str(err.value))


def test_nan_samples_are_rejected(tmp_path):
    x = _tone(16000).astype(np.float32)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        audio.load(p)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_m4a_through_ffmpeg(tmp_path):
    wav, m4a = tmp_path / "a.wav", tmp_path / "a.m4a"
    sf.write(wav, _tone(44100, 2.0), 44100)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(wav), str(m4a)], check=True)
    assert abs(len(audio.load(m4a)) - 32000) < 2000


def test_m4a_without_ffmpeg_names_ffmpeg(tmp_path, monkeypatch):
    p = tmp_path / "a.m4a"
    p.write_bytes(b"\x00\x00\x00\x20ftypM4A " + b"\x00" * 100)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="needs ffmpeg"):
        audio.load(p)
