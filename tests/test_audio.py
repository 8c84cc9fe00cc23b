import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from whisperctl import audio
from whisperctl.inputs import AudioInput
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
    blocks = list(audio.stream(AudioInput.from_arg(p), block_seconds=3.0))
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
        (lambda p: p.write_text("hello, I am text pretending to be audio\n" * 20), "not an audio file FFmpeg can read"),
        (lambda p: p.write_bytes(open(p.parent / "ok.wav", "rb").read()[:30]), "truncated|corrupt"),
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


def _container(path, x: np.ndarray, rate: int, fmt: str, codec: str | None, channels: int = 1, video: bool = False):
    """Write ``x`` (mono float) into a container with PyAV itself (no ffmpeg binary): ``codec`` None = no audio."""
    import av

    layout = "mono" if channels == 1 else "stereo"
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream("mpeg4", rate=10) if video else None
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        st = out.add_stream(codec, rate=rate, layout=layout) if codec else None
        if vs is not None:
            for _ in range(10):
                for packet in vs.encode(av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if st is not None:
            data = np.tile(x[None, :].astype(np.float32), (channels, 1))
            step = st.codec_context.frame_size or 1024
            for i in range(0, data.shape[1], step):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, i : i + step]), format="fltp", layout=layout)
                frame.sample_rate = rate
                for packet in st.encode(frame):
                    out.mux(packet)
            for packet in st.encode():
                out.mux(packet)


@pytest.mark.parametrize("name, fmt, codec, channels, video", [
    ("phone.m4a", "mp4", "aac", 1, False),  # a phone's voice memo
    ("meeting.mp4", "mp4", "aac", 2, True),  # a meeting recording: video and stereo audio
    ("call.webm", "webm", "libopus", 2, False),  # a browser recording
    ("note.opus", "ogg", "libopus", 1, False),  # a messenger's voice note
])
def test_containers_decode_in_process_without_an_ffmpeg_binary(tmp_path, monkeypatch, name, fmt, codec, channels, video):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg binary to fall back on
    rate = 48000
    t = np.arange(int(rate * 3.0)) / rate
    x = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    path = tmp_path / name
    _container(path, x, rate, fmt, codec, channels, video)
    got = audio.load(path)
    assert abs(len(got) - 48000) < 0.05 * 48000, len(got)  # 3 s at 16 kHz (codec priming/padding aside)
    spectrum = np.abs(np.fft.rfft(got[4000:36000]))
    assert abs(np.argmax(spectrum) * 16000 / 32000 - 440) < 2  # the tone, at its pitch: resampled correctly
    assert 0.4 < float(got[4000:36000].std()) * np.sqrt(2) < 0.6  # the tone's amplitude: channels averaged, not summed
    blocks = list(audio.stream(AudioInput.from_arg(path), block_seconds=1.0))
    assert len(blocks) >= 3 and abs(sum(map(len, blocks)) - len(got)) <= 1  # streamed block by block


def test_piped_container_decodes_from_stdin(tmp_path, monkeypatch):
    path = tmp_path / "a.webm"
    _container(path, _tone(48000, 2.0).astype(np.float32), 48000, "webm", "libopus")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    assert abs(len(audio.load("-")) - 32000) < 1600


@pytest.mark.parametrize("make, fragment", [
    ("video-only", "no audio stream in this file \\(video only\\)"),
    ("truncated-m4a", "not an audio file FFmpeg can read.*corrupt"),
    ("random-bytes", "not an audio file FFmpeg can read"),
])
def test_bad_containers_fail_with_one_line(tmp_path, make, fragment):
    import re

    path = tmp_path / ("v.mp4" if make == "video-only" else "x.m4a")
    if make == "video-only":
        _container(path, np.zeros(0, np.float32), 48000, "mp4", None, video=True)
    elif make == "truncated-m4a":
        _container(path, _tone(48000, 2.0).astype(np.float32), 48000, "mp4", "aac")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # the index (moov) comes last: gone
    else:
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError) as err:
        audio.load(path)
    message = str(err.value)
    assert message.startswith(str(path)) and "\n" not in message and re.search(fragment, message), message


def test_without_pyav_a_container_names_the_install(tmp_path, monkeypatch):
    import sys

    path = tmp_path / "a.m4a"
    _container(path, _tone(48000, 1.0).astype(np.float32), 48000, "mp4", "aac")
    monkeypatch.setitem(sys.modules, "av", None)  # as if the wheel were missing
    with pytest.raises(AudioError, match="pip install av"):
        audio.load(path)
