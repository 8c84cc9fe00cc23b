"""Issue 39's smaller findings (docs/reliability.md, "Round 4"): each case through the CLI or the public API, each
test failing before its fix."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import EXAMPLES, ROOT, run_cli
from whisperctl.bench import engines, runner

TESTS = Path(__file__).resolve().parent


# ------------------------------------------------------------ an interrupted bench keeps the rows that finished
@pytest.mark.parametrize("stop, code", [("KeyboardInterrupt", 130), ("Terminated", 143)])
def test_an_interrupted_bench_writes_the_rows_that_finished_marked_partial(tiny_random_model, monkeypatch, capsys,
                                                                           tmp_path, stop, code):
    """Ctrl-C (or SIGTERM) during the second configuration: the first row is in every output, marked partial."""
    from whisperctl.cli import Terminated

    measured = []
    real = runner.measure

    def measure(*args, **kwargs):
        measured.append(args[1].attention.value)
        if len(measured) == 2:
            raise Terminated() if stop == "Terminated" else KeyboardInterrupt()
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "measure", measure)
    out = {kind: tmp_path / f"r.{kind}" for kind in ("json", "csv", "md")}
    code_, stdout, err = run_cli(["bench", "--model", tiny_random_model, "--compare", "eager,sdpa", "--batch-sizes", "1",
                                  "--warmup", "0", "--repeats", "1", "--max-new-tokens", "2", "--temperature", "0",
                                  "--json", out["json"], "--csv", out["csv"], "--markdown", out["md"]], capsys)
    assert code_ == code, err
    assert measured == ["eager", "sdpa"]
    data = json.loads(out["json"].read_text())
    assert data["partial"] is True
    assert [(r["attention"], r["status"]) for r in data["rows"]] == [("eager", "ok"), ("sdpa", "interrupted")]
    assert data["rows"][0]["samples"] and data["rows"][0]["rtfx_median"] > 0
    with out["csv"].open() as fh:
        assert [(r["attention"], r["status"]) for r in csv.DictReader(fh)] == [("eager", "ok"), ("sdpa", "interrupted")]
    assert "PARTIAL: interrupted; 1 of 2 row(s) did not finish" in out["md"].read_text()
    assert "PARTIAL" in stdout and "interrupted" in stdout
    word = "terminated" if stop == "Terminated" else "interrupted"
    assert err.splitlines()[-1] == (f"whisperctl: {word}; the 1 of 2 row(s) that finished are written to {out['json']}, "
                                    f"{out['csv']}, {out['md']}, marked partial")


@pytest.fixture
def fake_engines(monkeypatch, tmp_path):
    """Parent and children find tests/bench_fake_engines.py; temporary files go to a folder of this test's own."""
    import tempfile

    monkeypatch.setenv(engines.PLUGINS_ENV, "bench_fake_engines")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "engines.log"
    monkeypatch.setenv("FAKE_ENGINE_LOG", str(log))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    return log, temp


def test_an_interrupted_engines_bench_keeps_the_repeats_that_finished(fake_engines, monkeypatch, capsys, tmp_path):
    from whisperctl.bench import compare

    real, spawned = compare._spawn, []

    def spawn(name, *args):
        spawned.append(name)
        if len(spawned) == 2:
            raise KeyboardInterrupt()
        return real(name, *args)

    monkeypatch.setattr(compare, "_spawn", spawn)
    code, _, err = run_cli(["bench", "--engines", "fake,fake-twin", "--warmup", "0", "--repeats", "2", "--threads", "1",
                            "--json", tmp_path / "e.json"], capsys)
    assert code == 130, err
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["partial"] is True
    assert [(r["engine"], r["status"]) for r in data["rows"]] == [
        ("fake", "ok (1/2 repeats; then interrupted)"), ("fake-twin", "interrupted")]
    assert len(data["rows"][0]["samples"]) == 1 and data["rows"][0]["rtfx_median"] > 0
    assert list(fake_engines[1].iterdir()) == []  # the decoded inputs are removed all the same


# ------------------------------------------------------------ a killed bench --engines leaves no process or audio
def _wait_for(what, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.05)
    return what()


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # dead, not yet reaped by its new parent
    except psutil.NoSuchProcess:
        return True


def test_a_killed_engines_bench_leaves_no_engine_process_and_no_audio(fake_engines, capsys):
    log, temp = fake_engines
    bench = ["bench", "--engines", "fake", "--warmup", "0", "--repeats", "1", "--threads", "1", "-q"]
    parent = subprocess.Popen([sys.executable, "-c", "from whisperctl.cli import main; main()", *bench], env={**os.environ, "FAKE_ENGINE_SLEEP": "120"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        started = _wait_for(lambda: log.exists() and log.read_text().strip(), 120)
        assert started, "the engine's process never started"
        child = json.loads(started.splitlines()[0])["pid"]
        assert list(temp.glob("whisperctl-engines-*/input-0.npy"))  # the decoded audio, while the run lives
        parent.kill()
        parent.wait(10)
        assert _wait_for(lambda: _gone(child), 5), "the engine's process outlived its bench"
    finally:
        parent.kill()
        parent.wait()
    log.unlink()
    code, _, err = run_cli(bench, capsys)  # the next run removes what the killed one could not
    assert code == 0, err
    assert list(temp.iterdir()) == []


# ------------------------------------------------------------ one key spelled two ways in a preset
@pytest.mark.parametrize("toml, message", [
    ("[engine]\nbeam_size = 2\nbeam-size = 5\n", "'beam_size' and 'beam-size' in [engine] are one key spelled two ways"),
    ("beam-size = 2\n[engine]\nbeam_size = 5\n", "'beam-size' at the top level and 'beam_size' in [engine] are the same key"),
    ("[bench]\nbatch_sizes = '1'\nbatch-sizes = '8'\n", "'batch_sizes' and 'batch-sizes' in [bench] are one key spelled two ways"),
])
def test_a_preset_key_given_twice_is_a_usage_error_naming_both(tmp_path, capsys, no_model_load, toml, message):
    preset = tmp_path / "p.toml"
    preset.write_text(toml)
    code, _, err = run_cli(["transcribe", EXAMPLES / "short.wav", "--config", preset], capsys)
    assert code == 2
    assert err == f"whisperctl: error: --config {preset}: {message}; keep one.\n"


def test_preset_keys_come_back_spelled_with_underscores(tmp_path):
    """A [bench] key written with hyphens (batch-sizes) was accepted and then never read."""
    from whisperctl.presets import load_config_file

    preset = tmp_path / "p.toml"
    preset.write_text("beam-size = 2\n[bench]\nbatch-sizes = '1,2'\n")
    assert load_config_file(preset) == {"engine": {"beam_size": 2}, "bench": {"batch_sizes": "1,2"}}


# ------------------------------------------------------------ HF_HOME that is a file
@pytest.mark.parametrize("variable", ["HF_HOME", "HF_HUB_CACHE"])
def test_hugging_face_cache_variable_naming_a_file_says_so(tmp_path, capsys, monkeypatch, no_model_load, variable):
    not_a_dir = tmp_path / "hf"
    not_a_dir.write_text("not a directory\n")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(not_a_dir))
    code, _, err = run_cli(["transcribe", EXAMPLES / "short.wav", "--model", "tiny"], capsys)
    assert code == 2
    assert err == (f"whisperctl: error: --model tiny: {variable}={not_a_dir} is a file, not a directory: the Hugging "
                   f"Face cache cannot be there. Point {variable} at a directory, or unset it.\n")


# ------------------------------------------------------------ an ID3 tag larger than the file
def _mp3_with_id3_claiming(tmp_path, size: int) -> Path:
    synchsafe = bytes((size >> shift) & 0x7F for shift in (21, 14, 7, 0))
    path = tmp_path / "tagged.mp3"
    path.write_bytes(b"ID3\x04\x00\x00" + synchsafe + b"\xff\xfb\x90\x64" + bytes(100))
    return path


def test_an_id3_tag_claiming_more_than_the_file_is_named_as_the_reason(tmp_path, capsys):
    from whisperctl import audio
    from whisperctl.errors import AudioError

    mp3 = _mp3_with_id3_claiming(tmp_path, 0x0FFFFFFF)  # 256 MiB, the largest a tag can claim
    reason = ("its ID3 tag claims 268435455 bytes (256.0 MiB) but the whole file has 114, so no audio follows the tag; "
              "the file is truncated or corrupt.")
    with pytest.raises(AudioError) as caught:
        audio.load(mp3)
    assert str(caught.value) == f"{mp3}: {reason}"
    code, _, err = run_cli(["transcribe", mp3, "-q"], capsys, stdin=mp3.read_bytes())
    assert code == 1 and err == f"whisperctl: error: {mp3}: {reason}\n"


# ------------------------------------------------------------ --max-new-tokens that cuts windows
def test_windows_cut_at_max_new_tokens_are_said_once(capsys, tmp_path):
    import soundfile as sf

    samples, rate = sf.read(EXAMPLES / "short.wav", dtype="float32")
    clip = tmp_path / "clip.wav"  # its first sentence alone: a short decode, a faster test
    sf.write(clip, samples[: int(3.2 * rate)], rate)
    note = ("whisperctl: WARNING: --max-new-tokens 8: 1 window(s) were cut at the limit; their text is incomplete "
            "(raise the limit, or leave it out for the model's maximum).\n")
    common = ["transcribe", clip, "-q", "--temperature", "0"]  # -q: warnings only; T=0: no fallback passes
    code, out, err = run_cli([*common, "--max-new-tokens", "8"], capsys)
    assert code == 0 and out.strip() and err == note
    code, out, err = run_cli(common, capsys)
    assert code == 0 and "offline" in out and err == ""


def test_bench_says_cut_windows_once_per_run_and_never_for_forced_token_counts(tiny_random_model, capsys):
    bench = ["bench", "--model", tiny_random_model, "--compare", "sdpa", "--batch-sizes", "1", "--warmup", "1",
             "--repeats", "2", "--temperature", "0"]
    said = lambda err: [line for line in err.splitlines() if "cut at the limit" in line]  # noqa: E731
    code, _, err = run_cli([*bench, "--max-new-tokens", "2"], capsys)
    assert code == 0, err
    assert said(err) == ["whisperctl: WARNING: --max-new-tokens 2: windows were cut at the limit in 1 of 1 row(s); "
                         "their texts and WER are of incomplete text."]
    code, _, err = run_cli([*bench, "--decode-tokens", "2"], capsys)
    assert code == 0 and said(err) == [], err


# ------------------------------------------------------------ out of memory on the CPU
@pytest.mark.parametrize("failure", [
    RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to "
                 "allocate 123 bytes. Error code 12 (Cannot allocate memory)"),
    MemoryError(),
])
def test_running_out_of_ram_is_an_out_of_memory_error_naming_the_fix(tiny_random_model, monkeypatch, failure):
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.errors import OutOfMemoryError
    from whisperctl.loaded import LoadedModel

    def features(self, chunks):
        raise failure

    monkeypatch.setattr(LoadedModel, "features", features)
    config = EngineConfig(model=str(tiny_random_model), vad="none", chunking="batched", batch_size=4, beam_size=2,
                          quantization="none")
    with pytest.raises(OutOfMemoryError) as caught:
        Transcriber(config).transcribe(np.zeros(16000 * 70, np.float32))
    failed = " (an allocation of 123 bytes failed)" if isinstance(failure, RuntimeError) else ""
    assert str(caught.value) == (
        f"out of memory (RAM) decoding a batch of 3 window(s) at beam size 2 with model "
        f"'{tiny_random_model}' in fp32 on cpu{failed}. Try a smaller --batch-size or --beam-size, or --quantize int8.")


# ------------------------------------------------------------ --chunk-length that sequential chunking ignores
def test_chunk_length_with_sequential_chunking_is_said_to_be_unused(tiny_random_model, capsys, tmp_path):
    common = [EXAMPLES / "short.wav", "-q", "--model", tiny_random_model, "--max-new-tokens", "2", "--temperature", "0"]
    unused = ("whisperctl: WARNING: --chunk-length {} s is not used: sequential chunking (the default) always decodes "
              "30 s windows; --chunk-length applies to --chunking batched|vad.")
    said = lambda err: [line for line in err.splitlines() if "--chunk-length" in line]  # noqa: E731
    _, _, err = run_cli(["transcribe", *common, "--chunk-length", "10"], capsys)
    assert said(err) == [unused.format(10)]
    preset = tmp_path / "p.toml"
    preset.write_text("chunk_length_s = 20.0\n")
    _, _, err = run_cli(["transcribe", *common, "--config", preset], capsys)
    assert said(err) == [unused.format(20)]
    for flags in ([], ["--chunk-length", "30"], ["--chunking", "batched", "--chunk-length", "10"]):
        _, _, err = run_cli(["transcribe", *common, *flags], capsys)
        assert said(err) == [], flags
