"""Output ownership: exclusive names across processes, records of which input wrote what, resume by owner."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest

from conftest import EXAMPLES, ROOT, run_cli
from whisperctl.errors import OutputError
from whisperctl.outputs import RECORDS_DIR, OutputDirectory

FAST = ["--max-new-tokens", "4", "--temperature", "0"]  # the random-weight model: wiring, not words


def _two_inputs_one_stem(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = tmp_path / "a" / "x.wav", tmp_path / "b" / "x.wav"
    shutil.copy(EXAMPLES / "short.wav", a)
    b.write_bytes(a.read_bytes()[:44] + bytes(reversed(a.read_bytes()[44:])))  # same size, other content
    return a, b


def _claim(args):
    out, name = args
    return OutputDirectory(out, ["txt"]).claim(name).stem


def test_concurrent_processes_never_share_a_name(tmp_path):
    """16 processes, 8 inputs with one stem, each claimed twice: every input gets one name, no name two inputs."""
    out = tmp_path / "out"
    out.mkdir()
    names = []
    for i in range(8):
        d = tmp_path / f"d{i}"
        d.mkdir()
        (d / "x.wav").write_bytes(os.urandom(1000 + i))
        names.append(str(d / "x.wav"))
    with multiprocessing.get_context("spawn").Pool(8) as pool:
        stems = pool.map(_claim, [(out, n) for n in names + names])
    by_input = {n: {s for s, m in zip(stems, names + names) if m == n} for n in names}
    assert all(len(v) == 1 for v in by_input.values()), by_input
    assert sorted(s for v in by_input.values() for s in v) == sorted(["x"] + [f"x-{k}" for k in range(2, 9)])
    for n, (stem,) in by_input.items():
        assert json.loads((out / RECORDS_DIR / f"{stem}.json").read_text())["input"] == os.path.realpath(n)


def test_two_cli_runs_sharing_an_output_directory_keep_both_transcripts(tmp_path, tiny_random_model):
    """Two real processes at once, a/x.wav and b/x.wav into one -o: two files, each recording its input."""
    a, b = _two_inputs_one_stem(tmp_path)
    out = tmp_path / "out"
    exe = [sys.executable, "-c", "from whisperctl.cli import main; main()"]
    procs = [subprocess.Popen(exe + ["transcribe", str(p), "-o", str(out), "-q", "-f", "json", "--model", str(tiny_random_model), *FAST],
                              stderr=subprocess.PIPE, text=True, cwd=ROOT) for p in (a, b)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    written = sorted(p.name for p in out.glob("*.json"))
    assert written == ["x-2.json", "x.json"]
    owners = {json.loads((out / n).read_text())["origin"]["input"] for n in written}
    assert owners == {str(a.resolve()), str(b.resolve())}


def test_skip_existing_knows_which_input_owns_an_output(tmp_path, capsys, tiny_random_model):
    a, b = _two_inputs_one_stem(tmp_path)
    out = tmp_path / "out"
    model = ["--model", tiny_random_model, *FAST, "-q"]
    assert run_cli(["transcribe", a, "-o", out, *model], capsys)[0] == 0
    code, _, err = run_cli(["transcribe", b, "-o", out, "--skip-existing", *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.txt")) == ["x-2.txt", "x.txt"], "b was transcribed, not skipped"
    code, _, err = run_cli(["transcribe", b, a, "-o", out, "--skip-existing", "--model", tiny_random_model, *FAST], capsys)
    assert code == 0 and "0 transcribed, 0 failed, 2 skipped" in err
    # the names are permanent: listing b first does not swap them
    record = json.loads((out / RECORDS_DIR / "x-2.json").read_text())
    assert record["input"] == str(b.resolve()) and record["formats"] == ["txt"]


def test_changed_input_is_transcribed_again_under_skip_existing(tmp_path, capsys, tiny_random_model):
    src = tmp_path / "clip.wav"
    shutil.copy(EXAMPLES / "short.wav", src)
    out = tmp_path / "out"
    args = ["transcribe", src, "-o", out, "-q", "--model", tiny_random_model, *FAST]
    assert run_cli(args, capsys)[0] == 0
    data = bytearray(src.read_bytes())
    data[1000:1100] = bytes(100)  # a re-recorded/edited file: same name, same size, other content
    src.write_bytes(bytes(data))
    before = (out / "clip.txt").stat().st_mtime_ns
    code, _, err = run_cli(args + ["--skip-existing"], capsys)
    assert code == 0, err
    assert (out / "clip.txt").stat().st_mtime_ns != before, "the stale transcript was replaced"
    from whisperctl.audio import input_identity

    record = json.loads((out / RECORDS_DIR / "clip.json").read_text())
    assert record["fingerprint"] == input_identity(str(src))["fingerprint"]


def test_a_moved_input_keeps_its_outputs(tmp_path, capsys, tiny_random_model):
    src = tmp_path / "clip.wav"
    shutil.copy(EXAMPLES / "short.wav", src)
    out = tmp_path / "out"
    assert run_cli(["transcribe", src, "-o", out, "-q", "--model", tiny_random_model, *FAST], capsys)[0] == 0
    moved = tmp_path / "elsewhere" / "clip.wav"
    moved.parent.mkdir()
    src.rename(moved)
    code, _, err = run_cli(["transcribe", moved, "-o", out, "--skip-existing", "--model", tiny_random_model, *FAST], capsys)
    assert code == 0 and "1 skipped" in err


def test_outputs_nobody_recorded_are_not_taken_without_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x.txt").write_text("someone's notes")
    with pytest.raises(OutputError, match="no whisperctl record says which input wrote it; pass --overwrite"):
        OutputDirectory(out, ["txt"]).claim(str(tmp_path / "x.wav"))
    claim = OutputDirectory(out, ["txt"]).claim(str(tmp_path / "x.wav"), overwrite=True)
    assert claim.stem == "x" and claim.previous is None


def test_within_one_run_colliding_stems_are_numbered_in_input_order(tmp_path, capsys, tiny_random_model):
    a, b = _two_inputs_one_stem(tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli(["transcribe", a, b, "-o", out, "-q", "-f", "json", "--model", tiny_random_model, *FAST], capsys)
    assert code == 0, err
    assert json.loads((out / "x.json").read_text())["origin"]["input"] == str(a.resolve())
    assert json.loads((out / "x-2.json").read_text())["origin"]["input"] == str(b.resolve())


def test_outputs_respect_the_umask(tmp_path, capsys, tiny_random_model):
    old = os.umask(0o022)
    try:
        assert run_cli(["transcribe", EXAMPLES / "short.wav", "-o", tmp_path, "-q", "--model", tiny_random_model, *FAST], capsys)[0] == 0
        assert (tmp_path / "short.txt").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        assert run_cli(["transcribe", EXAMPLES / "short.wav", "-o", tmp_path, "-q", "--overwrite", "--model", tiny_random_model, *FAST], capsys)[0] == 0
        assert (tmp_path / "short.txt").stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_failures_tsv_keeps_odd_names_in_one_field(tmp_path, capsys):
    odd = tmp_path / "tab\there\nnewline \"quoted\".wav"
    odd.write_bytes(b"not audio at all" * 10)
    failures = tmp_path / "failures.tsv"
    code, _, _ = run_cli(["transcribe", odd, str(tmp_path / "missing.wav"), "--failures", failures, "-q"], capsys)
    assert code == 1
    rows = list(csv.reader(io.StringIO(failures.read_text()), dialect="excel-tab"))
    assert rows[0] == ["input", "reason"]
    assert {r[0] for r in rows[1:]} == {str(odd), str(tmp_path / "missing.wav")}
    assert all(len(r) == 2 for r in rows)


def test_stdin_outputs_are_never_skipped_or_replaced_unasked(tmp_path, capsys, monkeypatch, tiny_random_model):
    """What came through stdin cannot be compared with an earlier run: no skip, no silent replacement."""
    out = tmp_path / "out"
    args = ["transcribe", "-", "-o", out, "-q", "--model", tiny_random_model, *FAST]
    wav = (EXAMPLES / "short.wav").read_bytes()
    assert run_cli(args, capsys, stdin=wav, monkeypatch=monkeypatch)[0] == 0
    first = (out / "stdin.txt").read_text()
    code, _, err = run_cli(args + ["--skip-existing"], capsys, stdin=wav, monkeypatch=monkeypatch)
    assert code == 1 and "standard input cannot be matched" in err
    assert (out / "stdin.txt").read_text() == first
    assert run_cli(args + ["--overwrite"], capsys, stdin=wav, monkeypatch=monkeypatch)[0] == 0


def test_skip_existing_without_an_output_dir_is_a_usage_error(capsys):
    code, _, err = run_cli(["transcribe", EXAMPLES / "short.wav", "--skip-existing"], capsys)
    assert code == 2 and "--skip-existing resumes a run into --output-dir" in err


def test_outputs_never_replace_a_device_or_fifo(tmp_path):
    from whisperctl.writers import write_atomic

    fifo = tmp_path / "x.txt"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        write_atomic(fifo, "text")
    import stat

    assert stat.S_ISFIFO(fifo.stat().st_mode)


def test_file_names_that_are_not_utf8_round_trip(tmp_path, capsys, tiny_random_model):
    name = os.fsdecode(bytes(tmp_path) + b"/\xff-clip.wav")
    shutil.copy(EXAMPLES / "short.wav", name)
    out = tmp_path / "out"
    code, stdout, err = run_cli(["transcribe", name, "-f", "json", "-q", "--model", tiny_random_model, *FAST], capsys)
    assert code == 0, err
    assert json.loads(stdout)["source"] == name
    code, _, err = run_cli(["transcribe", name, "-o", out, "-f", "all", "-q", "--model", tiny_random_model, *FAST], capsys)
    assert code == 0, err
    written = json.loads((out / "_-clip.json").read_text(encoding="utf-8"))
    assert os.fsencode(written["source"]) == os.fsencode(name)
