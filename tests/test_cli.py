"""The real entry point: exact exit codes and error lines."""

import json
import shutil

import pytest

from conftest import EXAMPLES, run_cli


def test_help_is_fast_and_lists_transcribe(capsys):
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0 and "transcribe" in out


@pytest.mark.parametrize("spelling", ["fa2", "flash_attn_2", "flash-attention-2"])
def test_fa2_on_cpu_exits_2_with_reason_and_fix(capsys, spelling):
    code, out, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), "--attn", spelling], capsys)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [
        "whisperctl: error: --attn flash_attention_2: flash_attention_2 needs an NVIDIA CUDA GPU; this run uses cpu. Fix: use --attn sdpa."
    ]


def test_bogus_attention_lists_valid_names(capsys):
    code, _, err = run_cli(["transcribe", "x.wav", "--attn", "bogus"], capsys)
    assert code == 2
    assert "--attn: unknown value 'bogus'. Valid: auto, eager, sdpa, sdpa:flash, sdpa:efficient, sdpa:math, sdpa:cudnn, flash_attention_2, flex_attention." in err


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--batch-size", "0"], "--batch-size: must be an integer ≥ 1"),
        (["--chunk-length", "31"], "--chunk-length: 31 s is outside [1, 30]"),
        (["--chunk-length", "0"], "outside [1, 30]"),
        (["--dtype", "fp8"], "--dtype: unknown value"),
        (["--task", "translate"], "English-only and cannot translate"),
        (["--language", "xx-bogus"], "--language"),
        (["--model", "nonexistent-model"], "--model nonexistent-model: unknown model"),
        (["--quantize", "int4"], "int4 needs CUDA"),
        (["--output-format", "docx"], "--output-format: unknown value 'docx'"),
        (["--output-format", "all"], "add --output-dir"),
        (["--device", "cuda"], "CUDA is not available"),
        # every option bounded before loading (docs/reliability.md, round 2)
        (["--threads", "100000"], "--threads: 100000 is above the maximum"),
        (["--beam-size", "1000"], "--beam-size: 1000 is above the maximum 32"),
        (["--batch-size", "100000"], "--batch-size: 100000 is above the maximum 512"),
        (["--chunk-length", "0.001"], "--chunk-length: 0.001 s is outside [1, 30]"),
        (["--chunk-length", "1e-9"], "outside [1, 30]"),
        (["--max-new-tokens", "5000"], "448 positions"),
        (["--temperature", ",".join(["0.1"] * 50)], "--temperature"),
        (["--no-speech-threshold", "7"], "probability"),
        (["--initial-prompt", "x" * 20_000], "--initial-prompt"),
        # voice activity detection
        (["--vad-threshold", "0"], "--vad-threshold: 0 is a speech probability"),
        (["--vad-threshold", "1"], "--vad-threshold: 1 is a speech probability"),
        (["--vad-threshold", "nan"], "--vad-threshold: must be a finite number"),
        (["--min-silence-ms", "-1"], "--min-silence-ms: must be an integer ≥ 0"),
        (["--speech-pad-ms", "-400"], "--speech-pad-ms: must be an integer ≥ 0"),
        (["--speech-pad-ms", "600000"], "--speech-pad-ms: 600000 is above the maximum"),
        (["--vad", "webrtc"], "--vad"),
        (["--chunking", "vad", "--vad", "none"], "--chunking vad: cuts windows at the pauses a VAD finds"),
        (["--clip-timestamps", "5,3"], "--clip-timestamps: clip 1 ends before it starts (5 then 3)"),
        (["--clip-timestamps", "0,5,4,8"], "--clip-timestamps: clip 2 starts before the previous clip ends"),
        (["--clip-timestamps", "-1,5"], "--clip-timestamps: times are seconds ≥ 0"),
        (["--clip-timestamps", "0,,5"], "--clip-timestamps: '0,,5' has an empty value"),
        (["--clip-timestamps", "a,5"], "--clip-timestamps: 'a' is not a number"),
        (["--clip-timestamps", "0,5", "--chunking", "vad"], "--clip-timestamps: cannot be combined with --chunking vad"),
        (["--clip-timestamps", "0,5", "--vad", "silero"], "--clip-timestamps: cannot be combined with --vad silero"),
        (["--hallucination-silence-threshold", "2"], "--hallucination-silence-threshold: judges segments by their words"),
        (["--hallucination-silence-threshold", "0", "--timestamps", "word"], "--hallucination-silence-threshold: 0 s"),
        (["--hallucination-silence-threshold", "-2", "--timestamps", "word"], "--hallucination-silence-threshold: -2 s"),
    ],
)
def test_bad_options_are_usage_errors_before_loading(capsys, flags, fragment, no_model_load):
    code, _, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), *flags], capsys)
    assert code == 2, err
    assert fragment in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_output_all_writes_five_well_formed_files(tmp_path, capsys):
    code, _, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), "-f", "all", "-o", tmp_path, "-q"], capsys)
    assert code == 0, err
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".whisperctl")
    assert names == ["short.json", "short.srt", "short.tsv", "short.txt", "short.vtt"]
    data = json.loads((tmp_path / "short.json").read_text())
    assert data["text"].strip() and data["runtime"]["attention"] == "sdpa"  # words vary across CPUs: not compared
    srt = (tmp_path / "short.srt").read_text()
    assert srt.startswith("1\n00:00:00,000 --> 00:00:") and srt.endswith("\n\n")
    assert (tmp_path / "short.vtt").read_text().startswith("WEBVTT\n\n00:00.000 --> ")
    rows = (tmp_path / "short.tsv").read_text().splitlines()
    assert rows[0] == "start\tend\ttext"
    times = [(int(r.split("\t")[0]), int(r.split("\t")[1])) for r in rows[1:]]
    assert all(s <= e <= 7900 for s, e in times) and times == sorted(times)
    assert [p.name for p in tmp_path.glob(".*")] == [".whisperctl"], "no temporary files left, only the ownership records"


def test_no_silent_overwrite_and_skip_existing(tmp_path, capsys):
    args = ["transcribe", str(EXAMPLES / "short.wav"), "-o", tmp_path, "-q"]
    assert run_cli(args, capsys)[0] == 0
    (tmp_path / "short.txt").write_text("keep me")
    code, _, err = run_cli(args, capsys)
    assert code == 1 and "exists" in err and "pass --overwrite" in err
    assert (tmp_path / "short.txt").read_text() == "keep me"
    assert run_cli(args + ["--skip-existing"], capsys)[0] == 0
    assert (tmp_path / "short.txt").read_text() == "keep me"
    assert run_cli(args + ["--overwrite"], capsys)[0] == 0
    assert (tmp_path / "short.txt").read_text() not in ("keep me", "")


def test_failing_file_reported_others_continue_exit_1(tmp_path, capsys):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = tmp_path / "out"
    code, _, err = run_cli(["transcribe", str(bad), str(EXAMPLES / "short.wav"), str(empty_dir), "missing.wav", "-o", out], capsys)
    assert code == 1
    assert (out / "short.txt").is_file() and not (out / "broken.txt").exists()
    assert f"{bad}:" in err and "missing.wav: no such file." in err and "directory has no audio files" in err
    assert "1 transcribed, 3 failed" in err and "Traceback" not in err


def test_directory_and_glob_inputs(tmp_path, capsys, tiny_random_model):
    d = tmp_path / "in" / "nested"
    d.mkdir(parents=True)
    shutil.copy(EXAMPLES / "short.wav", d / "a.wav")
    shutil.copy(EXAMPLES / "short.wav", tmp_path / "in" / "b.wav")
    model = ["--model", str(tiny_random_model), "--max-new-tokens", "4", "-q"]
    code, _, err = run_cli(["transcribe", tmp_path / "in", "-o", tmp_path / "all", *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if p.name != ".whisperctl") == ["a.txt", "b.txt"]
    code, _, err = run_cli(["transcribe", str(tmp_path / "in" / "*.wav"), "-o", tmp_path / "glob", *model], capsys)
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "glob").iterdir() if p.name != ".whisperctl") == ["b.txt"]


def test_stdin_input(capsys, monkeypatch):
    code, out, err = run_cli(["transcribe", "-", "-q"], capsys, stdin=(EXAMPLES / "short.wav").read_bytes(), monkeypatch=monkeypatch)
    assert code == 0 and out.strip(), err


def test_config_file_with_flag_override(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[engine]\nattention = "eager"\nbatch_size = 2\n')
    code, out, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), "--config", cfg, "-f", "json", "--attn", "sdpa:math"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["config"]["batch_size"] == 2 and data["runtime"]["attention"] == "sdpa:math"


def test_debug_variable_shows_traceback(capsys, monkeypatch):
    monkeypatch.setenv("WHISPERCTL_DEBUG", "1")
    from whisperctl.errors import UsageError

    with pytest.raises(UsageError):
        run_cli(["transcribe", "x.wav", "--attn", "bogus"], capsys)
