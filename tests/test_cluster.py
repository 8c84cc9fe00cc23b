"""``transcribe --ray`` and :func:`whisperctl.cluster.transcribe_corpus` on a local Ray cluster (2 CPUs, started by
the tests): the same outputs as a single-process run, the same rules and exit codes, and a worker killed mid-run
that loses and duplicates nothing. Without Ray installed only the usage errors run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, run_cli

try:
    import ray  # noqa: F401

    HAVE_RAY = True
except ImportError:
    HAVE_RAY = False
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="pip install '.[ray]'")

# Deterministic: one window per forward pass and one thread, so a window's text cannot depend on which other
# windows or how many threads shared its computation (the comparison with a local run is exact).
SAME = ["--batch-size", "1", "--threads", "1"]


def _corpus(tmp_path: Path, copies: int = 1) -> Path:
    """examples' speech (English and the four other languages: tiny.en writes something for each) in a folder."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    sources = [EXAMPLES / "short.wav", EXAMPLES / "long.flac", *sorted((EXAMPLES / "multilingual").glob("*.flac"))]
    for n in range(copies):
        for src in sources:
            shutil.copy(src, folder / (f"{src.stem}-{n}{src.suffix}" if copies > 1 else src.name))
    return folder


def _transcripts(out: Path) -> dict[str, tuple[str, list]]:
    """Each JSON output's text and segments (times and text): what must not depend on where it ran."""
    found = {}
    for path in sorted(out.glob("*.json")):
        data = json.loads(path.read_text())
        found[path.name] = (data["text"], [(s["start"], s["end"], s["text"]) for s in data["segments"]])
    return found


@pytest.fixture(scope="module")
def local_ray():
    if not HAVE_RAY:
        pytest.skip("pip install '.[ray]'")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------------------------------ usage errors
@pytest.mark.parametrize("args, message", [
    (["--workers", "2"], "add --ray"),
    (["--gpus-per-worker", "0.5"], "add --ray"),
    (["--ray", "auto"], "--output-dir"),
])
def test_ray_flags_are_checked_before_anything_runs(capsys, args, message, no_model_load):
    code, _, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_ray_refuses_stdin(tmp_path, capsys, no_model_load):
    code, _, err = run_cli(["transcribe", "-", "-o", tmp_path, "--ray", "auto"], capsys)
    assert code == 2 and "standard input" in err, err


def test_without_ray_the_flag_names_the_install(tmp_path, capsys, monkeypatch, no_model_load):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, _, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), "-o", tmp_path, "--ray", "auto"], capsys)
    assert code == 2 and "pip install 'whisperctl[ray]'" in err, err


@pytest.mark.parametrize("kwargs, message", [
    (dict(workers=0), "--workers"), (dict(cpus_per_worker=0), "--cpus-per-worker"),
    (dict(gpus_per_worker=1.5), "whole number"), (dict(gpus_per_worker=-1), "--gpus-per-worker"),
])
def test_bad_worker_sizes_are_usage_errors(tmp_path, kwargs, message):
    from whisperctl.cluster import transcribe_corpus
    from whisperctl.errors import UsageError

    with pytest.raises(UsageError, match=message):
        transcribe_corpus([str(EXAMPLES / "short.wav")], tmp_path, **kwargs)


# ------------------------------------------------------------------------------------------ on a local cluster
@needs_ray
@pytest.mark.slow
def test_two_workers_write_what_one_process_writes(tmp_path, capsys, local_ray):
    """The CLI on 2 Ray workers against the plain CLI, same options: the same files, texts, segments, exit code and
    summary counts; a missing input fails the same way in both; a rerun with --skip-existing does nothing."""
    corpus = _corpus(tmp_path)
    missing = str(tmp_path / "gone.wav")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    common = ["-f", "all", *SAME]
    code, _, err_local = run_cli(["transcribe", corpus, missing, "-o", local, *common], capsys)
    assert code == 1
    code, _, err_ray = run_cli(["transcribe", corpus, missing, "-o", on_ray, *common, "--ray", "auto", "--workers", "2",
                                "--failures", tmp_path / "failed.tsv"], capsys)
    assert code == 1, err_ray
    assert sorted(p.name for p in on_ray.iterdir()) == sorted(p.name for p in local.iterdir())
    assert len(list(on_ray.glob("*.json"))) == 6 and not list(on_ray.glob(".*.part"))
    assert _transcripts(on_ray) == _transcripts(local)
    for ext in ("txt", "srt", "vtt", "tsv"):
        for path in local.glob(f"*.{ext}"):
            assert (on_ray / path.name).read_text() == path.read_text(), path.name
    counts = re.compile(r"6 transcribed( \((\d+) with warnings\))?, 1 failed, 0 skipped")
    found_local, found_ray = counts.search(err_local), counts.search(err_ray)
    assert found_local and found_ray and found_local.group(1) == found_ray.group(1), (err_local, err_ray)
    assert "on Ray, 2 worker(s)" in err_ray and f"{missing}: " in err_ray
    assert (tmp_path / "failed.tsv").read_text().splitlines()[1].startswith(missing + "\t")
    records = sorted(p.name for p in (on_ray / ".whisperctl").iterdir())
    assert records == sorted(p.name for p in (local / ".whisperctl").iterdir())

    before = {p: p.stat().st_mtime_ns for p in on_ray.iterdir()}
    code, _, err = run_cli(["transcribe", corpus, "-o", on_ray, *common, "--ray", "auto", "--workers", "2",
                            "--skip-existing"], capsys)
    assert code == 0 and "0 transcribed, 0 failed, 6 skipped" in err, err
    assert {p: p.stat().st_mtime_ns for p in on_ray.iterdir()} == before


@needs_ray
@pytest.mark.slow
def test_the_shared_speech_folder_on_two_workers_matches_one_process(tmp_path, capsys, local_ray, speech):
    """The issue's command over ../shared/speech (43 recordings, one of 231 s): the same transcripts as one process."""
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    code, _, err = run_cli(["transcribe", speech, "-o", local, "-f", "json", "-q", *SAME], capsys)
    assert code == 0, err
    code, _, err = run_cli(["transcribe", speech, "-o", on_ray, "-f", "json", *SAME, "--ray", "auto", "--workers", "2"],
                           capsys)
    assert code == 0 and "0 failed, 0 skipped" in err and "on Ray, 2 worker(s)" in err, err
    assert len(_transcripts(on_ray)) >= 40 and _transcripts(on_ray) == _transcripts(local)


@needs_ray
def test_existing_outputs_follow_the_local_rules(tmp_path, capsys, local_ray):
    """Without --overwrite an unowned output is refused (exit 1, nothing replaced); with it, replaced."""
    corpus = tmp_path / "one"
    corpus.mkdir()
    shutil.copy(EXAMPLES / "short.wav", corpus / "short.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "short.txt").write_text("mine\n")
    code, _, err = run_cli(["transcribe", corpus, "-o", out, "--ray", "auto", "--workers", "1"], capsys)
    assert code == 1 and "--overwrite" in err and (out / "short.txt").read_text() == "mine\n"
    code, _, err = run_cli(["transcribe", corpus, "-o", out, "--ray", "auto", "--workers", "1", "--overwrite"], capsys)
    assert code == 0 and (out / "short.txt").read_text() != "mine\n", err


def _worker_pids() -> list[int]:
    """Processes of whisperctl's Ray actors (Ray titles them ray::MapWorker(MapBatches(_Worker)))."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"_Worker" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@needs_ray
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the worker process through /proc")
def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(tmp_path, local_ray):
    """SIGKILL one worker's process while files remain: Ray restarts it and runs its batch again; every output is
    present once, whole and well formed, no temporary file is left, and the texts equal an undisturbed run's."""
    from whisperctl.cluster import transcribe_corpus
    from whisperctl.config import EngineConfig, OutputFormat

    corpus = _corpus(tmp_path, copies=3)  # 18 files, one per task: work remains after the first outputs appear
    files = sorted(str(p) for p in corpus.iterdir())
    out = tmp_path / "out"
    config = EngineConfig(batch_size=1, threads=1)
    result: dict = {}

    def run():
        result["report"] = transcribe_corpus(files, out, config, [OutputFormat.JSON, OutputFormat.TXT], workers=2,
                                             files_per_task=1)

    runner = threading.Thread(target=run)
    runner.start()
    killed, remaining = None, 0
    deadline = time.monotonic() + 240
    while runner.is_alive() and time.monotonic() < deadline:
        done = len(list(out.glob("*.json"))) if out.is_dir() else 0
        pids = _worker_pids()
        if done >= 2 and pids:
            killed = pids[0]
            os.kill(killed, signal.SIGKILL)
            remaining = len(files) - done
            break
        time.sleep(0.05)
    runner.join(timeout=300)
    assert not runner.is_alive()
    assert killed is not None and remaining > 0
    report = result["report"]
    assert not report.failures and len(report.done) == len(files), report.failures
    assert sorted(p.name for p in out.glob("*.json")) == sorted(Path(f).stem + ".json" for f in files)
    assert sorted(p.name for p in out.glob("*.txt")) == sorted(Path(f).stem + ".txt" for f in files)
    assert not list(out.glob(".*.part")) and not list((out / ".whisperctl").glob(".*.part"))
    for path in out.glob("*.json"):
        json.loads(path.read_text())  # whole
    # copies of one recording got one text each, whatever worker (or retry) wrote them
    texts = _transcripts(out)
    for name, (text, _) in texts.items():
        original = name.rsplit("-", 1)[0]
        assert text == texts[f"{original}-0.json"][0], name
