"""Behaviour with the bundled real model (tiny.en) on real speech from ../shared/speech."""

import json

import pytest

from whisperctl import EngineConfig, Transcriber
from whisperctl.wer import normalize, wer

JFK = "whisper/jfk.flac"
LJ = "TTS/LJ001-0001_to_0032_concat.wav"


@pytest.fixture(scope="module")
def sdpa():
    return Transcriber(EngineConfig(attention="sdpa")).load()


def test_jfk_exact_after_normalisation(sdpa, speech, references):
    result = sdpa.transcribe(str(speech / JFK))
    assert normalize(result.text) == normalize(references[JFK])
    assert result.runtime["attention"] == "sdpa" and result.runtime["device"] == "cpu"
    assert result.language == "en" and result.duration == pytest.approx(11.0, abs=0.05)


@pytest.mark.parametrize("attention", ["eager", "sdpa:math", "sdpa:flash"])
def test_attention_implementations_give_the_same_text(sdpa, speech, attention):
    base = sdpa.transcribe(str(speech / JFK)).text
    other = Transcriber(EngineConfig(attention=attention)).transcribe(str(speech / JFK))
    assert other.runtime["attention"] == attention
    assert other.text == base


def _lj_reference(references):
    return " ".join(references[f"TTS/LJ001-{i:04d}.wav"] for i in range(1, 33))


@pytest.mark.slow
@pytest.mark.parametrize("chunking", ["batched", "sequential"])
def test_lj_long_form_wer(speech, references, chunking):
    result = Transcriber(EngineConfig(chunking=chunking)).transcribe(str(speech / LJ))
    score = wer([_lj_reference(references)], [result.text])
    assert score <= 0.07, f"{chunking}: WER {score:.3f}"
    assert result.duration == pytest.approx(231, abs=2)
    ends = [s.end for s in result.segments]
    assert all(a.start <= a.end <= b.start + 1e-6 for a, b in zip(result.segments, result.segments[1:]))
    assert 0 <= result.segments[0].start and ends[-1] <= result.duration + 1e-6


def test_batched_int8_keeps_the_words(speech, references):
    result = Transcriber(EngineConfig(quantization="int8")).transcribe(str(speech / JFK))
    assert wer([references[JFK]], [result.text]) <= 0.1
    assert result.runtime["quantization"] == "int8"


def test_word_timestamps_monotonic_inside_audio(speech):
    result = Transcriber(EngineConfig(attention="sdpa", timestamps="word")).transcribe(str(speech / JFK))
    words = [w for s in result.segments for w in s.words]
    assert [w.word.strip() for w in words][:4] == ["And", "so", "my", "fellow"]
    assert all(0 <= w.start <= w.end <= 11.0 for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert result.runtime["attention"] == "sdpa" and result.runtime["word_alignment_attention"] == "eager"
    country = [w for w in words if w.word.strip(" .") == "country"][-1]
    assert 9.0 < country.start < 11.0  # "...for your country." ends the clip


def test_many_files_batched_across_files(speech, references):
    files = [str(speech / f"pocketsphinx/cards_00{i}.wav") for i in range(1, 6)] + [str(speech / JFK)]
    t = Transcriber(EngineConfig(batch_size=4))
    results = list(t.transcribe_many(files + ["does-not-exist.wav"]))
    assert [r[0].name for r in results] == files + ["does-not-exist.wav"]
    assert "no such file" in str(results[-1][1])
    assert normalize(results[-2][1].text) == normalize(references[JFK])
    hyps = [r[1].text for r in results[:5]]
    assert wer([references[f"pocketsphinx/cards_00{i}.wav"] for i in range(1, 6)], hyps) < 0.35


def test_ctranslate2_directory_as_model(tmp_path, speech, references):
    import shutil

    from whisperctl import models

    d = tmp_path / "faster-whisper-tiny.en"
    shutil.copytree(models.bundled_dir(), d)
    t = Transcriber(EngineConfig(model=str(d)))
    assert t.source.kind == "ct2"
    assert normalize(t.transcribe(str(speech / JFK)).text) == normalize(references[JFK])


def test_transcript_json_is_self_describing(sdpa, speech):
    data = json.loads(json.dumps(sdpa.transcribe(str(speech / JFK)).to_dict()))
    assert data["config"]["attention"] == "sdpa" and data["runtime"]["attention"] == "sdpa"
    assert set(data["runtime"]["versions"]) == {"whisperctl", "torch", "transformers"}
    assert data["timings"]["rtfx"] > 0


def test_silence_and_noise_give_no_hallucinated_text(sdpa):
    import numpy as np

    silence = np.zeros(16000 * 20, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.003, 16000 * 20).astype(np.float32)
    for audio in (silence, noise, silence[:800]):
        result = sdpa.transcribe(audio)
        assert result.text == "" and result.segments == []
