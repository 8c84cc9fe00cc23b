"""Engine plumbing on a tiny random-weight Whisper: fast, no real speech needed."""

import numpy as np
import pytest

from whisperctl import EngineConfig, Transcriber
from whisperctl.errors import UsageError


def test_random_model_runs_batched_and_sequential(tiny_random_model):
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 70).astype(np.float32)
    for chunking in ("batched", "sequential"):
        t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=6, chunking=chunking, batch_size=2))
        result = t.transcribe(audio, name="noise")
        assert result.source == "noise" and result.duration == pytest.approx(70.0)
        assert result.runtime["model"] == str(tiny_random_model)
        for seg in result.segments:
            assert 0 <= seg.start <= seg.end <= 70.0


def test_array_input_validation(tiny_random_model):
    t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=2))
    with pytest.raises(UsageError, match="1-D"):
        t.transcribe(np.zeros((2, 100), np.float32))
    with pytest.raises(UsageError, match="NaN"):
        t.transcribe(np.array([0.0, np.nan], np.float32))


def test_english_only_model_rejects_translate_and_other_languages():
    with pytest.raises(UsageError, match="English-only and cannot translate"):
        Transcriber(EngineConfig(task="translate"))
    with pytest.raises(UsageError, match="English-only"):
        Transcriber(EngineConfig(language="de"))
    with pytest.raises(UsageError, match="not a Whisper language"):
        Transcriber(EngineConfig(model="small", language="klingon"))


def test_unknown_model_is_a_usage_error_with_suggestion():
    with pytest.raises(UsageError, match="Did you mean 'large-v3'"):
        Transcriber(EngineConfig(model="large-v33"))


def test_offline_hub_model_is_one_clear_line(monkeypatch, tmp_path):
    from whisperctl.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    t = Transcriber(EngineConfig(model="distil-small.en"))
    with pytest.raises(ModelNotFoundError) as err:
        t.load()
    msg = str(err.value)
    assert "distil-whisper/distil-small.en" in msg and "not in the local Hugging Face cache" in msg and "\n" not in msg


def test_arrays_of_the_same_name_stay_apart(tiny_random_model):
    t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=2))
    short, long = np.zeros(16000 * 2, np.float32), np.zeros(16000 * 5, np.float32)
    results = list(t.transcribe_many([("clip", short), ("clip", long)]))
    assert [r.duration for _, r in results] == [pytest.approx(2.0), pytest.approx(5.0)]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint8, bool])
def test_integer_and_bool_arrays_are_refused(tiny_random_model, dtype):
    t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=2))
    with pytest.raises(UsageError, match="float samples"):
        t.transcribe(np.zeros(16000, dtype))


def test_per_call_options_leave_the_loaded_model_alone(tiny_random_model):
    t = Transcriber(EngineConfig(model=str(tiny_random_model), max_new_tokens=2))
    loaded = t.loaded
    audio = np.zeros(16000 * 70, np.float32)
    batches = []
    # (no VAD: the zeros stand for audio to decode)
    t.transcribe_many([("a", audio)], t.options.replace(batch_size=1, vad="none"), on_batch=batches.append).__next__()
    assert {b.size for b in batches} == {1} and t.loaded is loaded and t.options.batch_size == 8
    with pytest.raises(UsageError, match="--batch-size"):
        t.options.replace(batch_size=0)


def test_module_level_transcribe_keeps_the_model_between_calls(tiny_random_model, monkeypatch):
    import whisperctl
    from whisperctl import loaded as loaded_mod

    calls = []
    real = loaded_mod.load
    monkeypatch.setattr(loaded_mod, "load", lambda *a: calls.append(1) or real(*a))
    audio = np.zeros(16000, np.float32)
    whisperctl.transcribe(audio, model=str(tiny_random_model), max_new_tokens=2)
    whisperctl.transcribe(audio, model=str(tiny_random_model), max_new_tokens=3, beam_size=2)
    assert len(calls) <= 1  # 0 when an earlier test already loaded this model through it
