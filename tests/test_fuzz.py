"""Property-based fuzzing of the two parsers of untrusted bytes: only whisperctl's own errors may escape."""

import io
import struct

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from whisperctl import audio, ct2, models
from whisperctl.errors import AudioError, ConversionError

SETTINGS = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _wav_bytes(fmt="WAV"):
    buf = io.BytesIO()
    sf.write(buf, (0.3 * np.sin(np.arange(8000) / 10)).astype(np.float32), 16000, format=fmt)
    return buf.getvalue()


SEEDS = {"wav": _wav_bytes("WAV"), "flac": _wav_bytes("FLAC"), "ogg": _wav_bytes("OGG")}


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[: max(1, cut % (len(buf) + 1))])


@SETTINGS
@given(ext=st.sampled_from(sorted(SEEDS)), edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=20),
       cut=st.integers(0, 10**6))
def test_audio_loader_on_mutated_files(tmp_path_factory, ext, edits, cut):
    path = tmp_path_factory.mktemp("fz") / f"x.{ext}"
    path.write_bytes(_mutate(SEEDS[ext], edits, cut))
    try:
        y = audio.load(path)
        assert y.dtype == np.float32 and np.isfinite(y).all()
    except AudioError:
        pass


@SETTINGS
@given(data=st.binary(min_size=0, max_size=2048), ext=st.sampled_from(["wav", "flac", "mp3", "ogg"]))
def test_audio_loader_on_random_bytes(tmp_path_factory, data, ext):
    path = tmp_path_factory.mktemp("fz") / f"x.{ext}"
    path.write_bytes(data)
    try:
        audio.load(path)
    except AudioError:
        pass


@pytest.fixture(scope="module")
def model_head() -> bytes:
    with (models.bundled_dir() / "model.bin").open("rb") as fh:
        return fh.read(64 * 1024)


@SETTINGS
@given(edits=st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 255)), min_size=1, max_size=10), cut=st.integers(0, 70000))
def test_ct2_reader_on_mutated_headers(tmp_path_factory, model_head, edits, cut):
    path = tmp_path_factory.mktemp("fz") / "model.bin"
    path.write_bytes(_mutate(model_head, edits, cut))
    with pytest.raises(ConversionError):  # a 64 KiB prefix can never be a whole model
        ct2.read_model_bin(path)


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_ct2_reader_on_random_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fz") / "model.bin"
    path.write_bytes(struct.pack("<I", 6) + data)
    try:
        ct2.read_model_bin(path)
    except ConversionError:
        pass
