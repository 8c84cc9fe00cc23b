"""Output ownership: exclusive names across processes, records of which input wrote what, resume by owner."""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import re
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
    assert record["input"] == str(b.resolve()) and list(record["outputs"]) == ["txt"]


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
    from whisperctl.inputs import input_identity

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


def _replace_recording(src):
    data = bytearray(src.read_bytes())
    data[1000:1100] = bytes(100)  # a re-recorded/edited file: same name, same size, other content
    src.write_bytes(bytes(data))


def test_skip_existing_rewrites_every_output_made_from_an_older_recording(tmp_path, capsys, tiny_random_model):
    """-f all, the recording replaced, -f txt --skip-existing, then -f all --skip-existing: srt, vtt, tsv and json
    still hold the old recording's transcript, so they are rewritten (they were "1 skipped"); the txt the previous
    run made from the new recording is current and kept."""
    from whisperctl.inputs import input_identity

    src = tmp_path / "x.wav"
    shutil.copy(EXAMPLES / "short.wav", src)
    out = tmp_path / "out"
    args = ["transcribe", src, "-o", out, "-q", "--model", tiny_random_model, *FAST]
    assert run_cli(args + ["-f", "all"], capsys)[0] == 0
    _replace_recording(src)
    assert run_cli(args + ["-f", "txt", "--skip-existing"], capsys)[0] == 0
    txt_written = (out / "x.txt").stat().st_mtime_ns
    srt_before = (out / "x.srt").stat().st_mtime_ns
    code, _, err = run_cli(args + ["-f", "all", "--skip-existing"], capsys)
    assert code == 0, err
    assert json.loads((out / "x.json").read_text())["origin"]["fingerprint"] == input_identity(str(src))["fingerprint"]
    assert (out / "x.srt").stat().st_mtime_ns != srt_before, "the old recording's srt was rewritten"
    assert (out / "x.txt").stat().st_mtime_ns == txt_written, "the current txt was kept"
    times = {p.name: p.stat().st_mtime_ns for p in out.glob("x.*")}
    assert run_cli(args + ["-f", "all", "--skip-existing"], capsys)[0] == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("x.*")} == times, "all current now: skipped"


def test_skip_existing_redoes_outputs_made_with_options_that_change_the_text(tmp_path, capsys, tiny_random_model):
    """Outputs are current for the options that made them: another --max-new-tokens (a decoding option) redoes
    the input; another --batch-size (speed only) does not."""
    src = tmp_path / "x.wav"
    shutil.copy(EXAMPLES / "short.wav", src)
    out = tmp_path / "out"
    base = ["transcribe", src, src.with_name("missing.wav"), "-o", out, "-f", "json", "--model", tiny_random_model,
            "--temperature", "0"]  # the missing input makes the summary line appear (and the exit code 1)
    assert run_cli(base + ["--max-new-tokens", "4"], capsys)[0] == 1
    code, _, err = run_cli(base + ["--max-new-tokens", "3", "--skip-existing"], capsys)
    # (random weights cut at a few tokens: their windows may carry low_logprob warnings)
    assert re.search(r"1 transcribed( \(1 with warnings\))?, 1 failed, 0 skipped", err), err
    assert json.loads((out / "x.json").read_text())["config"]["max_new_tokens"] == 3
    code, _, err = run_cli(base + ["--max-new-tokens", "3", "--skip-existing", "--batch-size", "2"], capsys)
    assert "0 transcribed, 1 failed, 1 skipped" in err, err


def test_output_settings_count_forced_token_counts_but_not_oom_halving():
    """RunControl's decode_tokens changes the text (outputs made without it are not current), halve_on_oom only how
    fast it comes; a call's control counts as the config's would."""
    from whisperctl.config import EngineConfig, RunControl
    from whisperctl.outputs import output_settings, settings_id

    config = EngineConfig(model="tiny.en")
    plain = settings_id(output_settings(config))
    forced = settings_id(output_settings(config.replace(decode_tokens=4)))
    assert forced != plain
    assert settings_id(output_settings(config, control=RunControl(decode_tokens=4))) == forced
    assert settings_id(output_settings(config.replace(halve_on_oom=False))) == plain
    assert settings_id(output_settings(config, control=RunControl(halve_on_oom=False))) == plain
    assert "halve_on_oom" not in output_settings(config) and output_settings(config)["decode_tokens"] is None


def test_planning_reads_each_ownership_record_once(tmp_path, monkeypatch):
    """3000 inputs named */audio.wav: claiming audio-N used to read the records audio … audio-(N-1) first, so a
    resume read 4.5 million records. Now the first run reads none and a resume reads each one once."""
    import whisperctl.outputs as outputs
    from whisperctl.config import OutputFormat

    count = 3000
    inputs = []
    for i in range(count):
        d = tmp_path / "in" / f"{i:04d}"
        d.mkdir(parents=True)
        (d / "audio.wav").write_bytes(i.to_bytes(4, "little") * 8)
        inputs.append(str(d / "audio.wav"))
    reads = []
    real_read = outputs._read_record

    def counting_read(path):
        reads.append(path)
        if len(reads) > 2 * count:
            raise AssertionError(f"{len(reads)} record reads for {count} inputs: planning is not linear")
        return real_read(path)

    monkeypatch.setattr(outputs, "_read_record", counting_read)
    out = tmp_path / "out"
    first = outputs.plan_outputs(inputs, out, [OutputFormat.TXT])
    assert len(first.claims) == count and not first.problems and len(reads) == 0
    assert {c.stem for c in first.claims.values()} == {"audio"} | {f"audio-{n}" for n in range(2, count + 1)}
    resumed = outputs.plan_outputs(list(reversed(inputs)), out, [OutputFormat.TXT], skip_existing=True)
    assert len(reads) <= count
    assert {name: c.stem for name, c in resumed.claims.items()} == {name: c.stem for name, c in first.claims.items()}


def test_stale_part_files_are_swept_but_never_a_live_writers(tmp_path, capsys, tiny_random_model):
    """A SIGKILLed write leaves .NAME.XXXXXXXX.part; the next run into the directory removes such files once they
    are a minute old and no process holds their lock. One a writer still holds, one just created (its writer may
    not have locked it yet) and files of other tools stay."""
    import fcntl
    import time

    out = tmp_path / "out"
    (out / RECORDS_DIR).mkdir(parents=True)
    hour_ago = time.time() - 3600
    stale = out / ".old.txt.a1b2c3d4.part"
    stale_record = out / RECORDS_DIR / ".old.json.e5f6g7h8.part"
    held = out / ".busy.srt.i9j0k1l2.part"
    fresh = out / ".new.txt.m3n4o5p6.part"
    other = out / ".notes.part"
    for path in (stale, stale_record, held, fresh, other):
        path.write_text("partial")
    for path in (stale, stale_record, held, other):
        os.utime(path, (hour_ago, hour_ago))
    with open(held, "rb") as writer:  # a live writer (on a stopped or slow machine) holds its file's lock
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX)
        code, _, err = run_cli(["transcribe", EXAMPLES / "short.wav", "-o", out, "-q", "--model", tiny_random_model, *FAST], capsys)
        assert code == 0, err
        assert held.exists() and fresh.exists() and other.exists()
    assert not stale.exists() and not stale_record.exists()


def test_a_ray_run_judges_current_outputs_as_a_local_run_does(tmp_path, capsys, tiny_random_model):
    """transcribe_corpus (--ray) plans with the same output settings as the CLI: what a local run made is current
    for the same options (skipped before any cluster is contacted) and not for others."""
    from whisperctl.cluster import transcribe_corpus
    from whisperctl.config import EngineConfig, OutputFormat
    from whisperctl.outputs import plan_outputs, output_settings

    src = tmp_path / "x.wav"
    shutil.copy(EXAMPLES / "short.wav", src)
    out = tmp_path / "out"
    assert run_cli(["transcribe", src, "-o", out, "-q", "-f", "json", "--model", tiny_random_model, *FAST], capsys)[0] == 0
    config = EngineConfig(model=str(tiny_random_model), max_new_tokens=4, temperature=(0.0,))
    report = transcribe_corpus([str(src)], out, config, [OutputFormat.JSON], skip_existing=True, address="nowhere:1")
    assert report.skipped == 1 and not report.outcomes and not report.problems
    other = output_settings(config, config.decode_options(max_new_tokens=3))
    assert plan_outputs([str(src)], out, [OutputFormat.JSON], skip_existing=True, settings=other).todo == [str(src)]
