"""Inputs built to hurt: implausible headers, pipes and devices, audio on the wrong scale, looping symlinks."""

from __future__ import annotations

import logging
import os
import struct
import threading

import numpy as np
import pytest
import soundfile as sf

from conftest import EXAMPLES
from whisperctl import audio, inputs
from whisperctl.errors import AudioError


def _wav_header(rate: int, channels: int = 1, frames: int = 100) -> bytes:
    data = bytes(frames * channels * 2)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


@pytest.mark.parametrize("rate, fragment", [(1, "1 Hz"), (999, "999 Hz"), (4_000_000, "4000000 Hz")])
def test_implausible_sample_rates_are_refused_before_reading(tmp_path, rate, fragment):
    """A 1 Hz header once grew a 17 GB buffer (16,000× upsampling); now it fails at once, reading nothing."""
    p = tmp_path / "hostile.wav"
    p.write_bytes(_wav_header(rate))
    import psutil

    before = psutil.Process().memory_info().rss
    with pytest.raises(AudioError, match=fragment):
        audio.load(p)
    assert psutil.Process().memory_info().rss - before < 200 << 20


def test_many_channels_are_read_in_bounded_blocks(tmp_path):
    p = tmp_path / "wide.wav"
    sf.write(p, np.zeros((16000, 64), dtype=np.float32), 16000, subtype="PCM_16")
    assert len(audio.load(p)) == 16000
    p.write_bytes(_wav_header(16000, channels=1000))
    with pytest.raises(AudioError):
        audio.load(p)


def _fed_fifo(tmp_path, payload: bytes):
    """A FIFO that a background thread writes ``payload`` into (once a reader opens it)."""
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as fh:
            fh.write(payload)

    threading.Thread(target=feed, daemon=True).start()
    return fifo


def test_fifo_is_read_like_stdin(tmp_path):
    fifo = _fed_fifo(tmp_path, (EXAMPLES / "short.wav").read_bytes())
    samples = audio.load(fifo)
    assert abs(len(samples) - len(audio.load(EXAMPLES / "short.wav"))) == 0


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_named_for_what_they_are(device):
    if not os.path.exists(device):
        pytest.skip(f"no {device}")
    with pytest.raises(AudioError, match="a character device, not an audio file"):
        audio.load(device)


def test_empty_file_still_says_empty(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty file \(0 bytes\)"):
        audio.load(p)


def test_float_audio_far_beyond_full_scale_is_scaled_with_a_warning(tmp_path, caplog):
    speech = audio.load(EXAMPLES / "short.wav")
    loud = tmp_path / "int16-values-as-float.wav"
    sf.write(loud, speech * 32768.0, 16000, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="whisperctl"):
        scaled = audio.load(loud)
    assert np.abs(scaled).max() == pytest.approx(1.0, rel=1e-4)
    assert np.allclose(scaled, speech / np.abs(speech).max(), atol=1e-4)
    assert any("far beyond full scale" in r.getMessage() for r in caplog.records)
    caplog.clear()
    ordinary = tmp_path / "hot.wav"
    sf.write(ordinary, np.clip(speech * 1.5, -1.9, 1.9), 16000, subtype="FLOAT")  # a little over: left alone
    with caplog.at_level(logging.WARNING, logger="whisperctl"):
        assert np.abs(audio.load(ordinary)).max() > 1.0
    assert not caplog.records


def test_loud_noise_is_scaled_and_carries_low_confidence(tmp_path):
    """σ = 1000 noise once produced confident sentences. Scaled to ±1 it is ordinary noise: no text, or text whose
    segments say they are unreliable (mean log-probability below openai-whisper's −1 threshold)."""
    from whisperctl import EngineConfig, Transcriber

    p = tmp_path / "noise.wav"
    sf.write(p, (np.random.default_rng(0).standard_normal(16000 * 11) * 1000).astype(np.float32), 16000, subtype="FLOAT")
    result = Transcriber(EngineConfig(device="cpu")).transcribe(str(p))
    assert all(s.avg_logprob is not None and s.avg_logprob < -1.0 for s in result.segments), result.segments
    assert len(result.text.split()) <= 5


def _tree_with_loops(root):
    (root / "d" / "sub").mkdir(parents=True)
    for name in ("d/a.flac", "d/sub/b.flac", "d/sub/c.wav"):
        (root / name).write_bytes(b"x")
    os.symlink("..", root / "d" / "sub" / "up")
    os.symlink("../..", root / "d" / "sub" / "up2")
    os.symlink("sub", root / "d" / "again")


def test_globs_and_directories_through_looping_links_list_each_file_once(tmp_path, monkeypatch):
    _tree_with_loops(tmp_path)
    monkeypatch.chdir(tmp_path)
    expected = ["d/a.flac", "d/sub/b.flac"]
    files, problems = inputs.expand_inputs(["d/**/*.flac"])
    assert files == expected and not problems
    files, _ = inputs.expand_inputs(["**/*.flac"])
    assert files == expected
    files, _ = inputs.expand_inputs(["d"])
    assert files == ["d/a.flac", "d/sub/b.flac", "d/sub/c.wav"]
    files, _ = inputs.expand_inputs([str(tmp_path / "d" / "**" / "*.[fw]*")])
    assert files == [str(tmp_path / "d" / f) for f in ("a.flac", "sub/b.flac", "sub/c.wav")]
    files, _ = inputs.expand_inputs(["d/a.flac", "./d/a.flac", "d/again/../a.flac"])
    assert files == ["d/a.flac"], "one file named three ways is one input"


def test_glob_matches_like_the_standard_glob_without_links(tmp_path, monkeypatch):
    import glob

    for name in ("x/a.wav", "x/y/b.wav", "x/y/z/c.flac", "x/.hidden/d.wav", "x/y/.e.wav", "x/y/f.WAV"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    for pattern in ("x/**/*.wav", "**/*.wav", "x/**/?.flac", "x/**/[a-c].*", "x/y/**/*", "x/**/*.[!w]*"):
        want = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
        assert inputs.expand_inputs([pattern])[0] == want, pattern


def test_library_arrays_beyond_full_scale_are_scaled_like_files(caplog, tiny_random_model):
    from whisperctl import EngineConfig, Transcriber

    t = Transcriber(EngineConfig(model=str(tiny_random_model), device="cpu", max_new_tokens=4, temperature=0))
    loud = audio.load(EXAMPLES / "short.wav") * 32768.0
    with caplog.at_level(logging.WARNING, logger="whisperctl"):
        t.transcribe(loud, name="loud")
    assert any("far beyond full scale" in r.getMessage() and "loud" in r.getMessage() for r in caplog.records)


def test_a_fifo_transcribes_to_the_end(tmp_path, tiny_random_model):
    """The transcript's origin must not open the FIFO again (it waited forever for a second writer)."""
    from whisperctl import EngineConfig, Transcriber

    fifo = _fed_fifo(tmp_path, (EXAMPLES / "short.wav").read_bytes())
    done: list = []
    worker = threading.Thread(target=lambda: done.append(Transcriber(EngineConfig(
        model=str(tiny_random_model), device="cpu", max_new_tokens=4, temperature=0)).transcribe(str(fifo))), daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert done, "transcribing a FIFO did not finish"
    assert done[0].duration > 5 and done[0].origin["fingerprint"] is None
