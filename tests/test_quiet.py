"""Quiet and compact output: nothing on stderr for a successful CPU run, -v for the engine's decisions, doctor one
line per check, bench's table within the terminal."""

import json
import logging
import re

import pytest

from conftest import EXAMPLES, run_cli
from whisperctl.config import Attention, EngineConfig


def _transcribe(model, *flags):
    return ["transcribe", str(EXAMPLES / "short.wav"), "--model", str(model), "--max-new-tokens", "4", *flags]


def test_cpu_transcribe_prints_nothing_on_stderr(capsys, monkeypatch):
    """The bundled model on speech: nothing to say (random weights cut at a few tokens get warnings, rightly)."""
    monkeypatch.delenv("WHISPERCTL_DEBUG", raising=False)
    run_cli(["transcribe", str(EXAMPLES / "short.wav")], capsys)  # (the first use converts the model, once, and says so)
    code, out, err = run_cli(["transcribe", str(EXAMPLES / "short.wav")], capsys)
    assert code == 0 and out.strip()
    assert err == ""  # was "whisperctl: auto → sdpa (flash_attention_2 not usable: …)" on every CPU run


def test_verbose_shows_the_attention_pick_and_each_window(capsys, tiny_random_model, monkeypatch):
    monkeypatch.delenv("WHISPERCTL_DEBUG", raising=False)
    code, out, err = run_cli(_transcribe(tiny_random_model, "-v"), capsys)
    assert code == 0 and out.strip(), err
    assert "whisperctl: DEBUG: auto → sdpa (flash_attention_2 not usable" in err
    assert re.search(r"^whisperctl: DEBUG: window 1/\d+: T=0\.0 avg_logprob=", err, re.M), err
    code, _, err = run_cli(_transcribe(tiny_random_model, "--verbose"), capsys)
    assert code == 0 and "window 1/" in err


def test_debug_variable_still_logs_each_window(capsys, tiny_random_model, monkeypatch):
    monkeypatch.setenv("WHISPERCTL_DEBUG", "1")
    code, _, err = run_cli(_transcribe(tiny_random_model), capsys)
    assert code == 0 and "whisperctl: DEBUG: window 1/" in err
    code, _, err = run_cli(_transcribe(tiny_random_model, "-q"), capsys)  # -q does not silence the debug variable
    assert code == 0 and "whisperctl: DEBUG: window 1/" in err


def test_verbose_and_quiet_contradict(capsys, monkeypatch, no_model_load):
    monkeypatch.delenv("WHISPERCTL_DEBUG", raising=False)
    code, _, err = run_cli(["transcribe", str(EXAMPLES / "short.wav"), "-v", "-q"], capsys)
    assert code == 2 and err == "whisperctl: error: --verbose and --quiet contradict each other; pick one.\n"


@pytest.mark.parametrize("machine, level", [("a100 without flash-attn", logging.INFO), ("cpu", logging.DEBUG)])
def test_auto_attention_is_told_only_when_a_gpu_fell_back(machine, level):
    """On a GPU, auto settling for sdpa (flash-attn missing, an old GPU, fp32) is news; on a CPU it is expected."""
    from test_eligibility import A100, env

    from whisperctl.engine import Transcriber

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("whisperctl")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        t = Transcriber(EngineConfig(), env(A100) if machine.startswith("a100") else env())
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    assert t.plan.attention is Attention.SDPA and t.plan.auto_fell_back is (level == logging.INFO)
    picks = [r for r in records if r.getMessage().startswith("auto → sdpa")]
    assert [r.levelno for r in picks] == [level]


def _doctor_rows(out: str, checks: list[dict]) -> dict[int, list[str]]:
    """Each check's lines in plain ``doctor`` output: its row and the indented lines under it."""
    lines = out.splitlines()
    starts = []
    for c in checks:
        row = re.compile(rf"^  {c['status']}  {re.escape(c['name'])}(\s|$)")
        found = [i for i, line in enumerate(lines) if row.match(line)]
        assert len(found) == 1, (c, out)
        starts.append(found[0])
    blocks = {}
    for k, start in enumerate(starts):
        end = start + 1
        while end < len(lines) and lines[end].startswith("    "):  # deeper than a row: its details
            end += 1
        blocks[k] = lines[start:end]
    return blocks


@pytest.fixture
def same_facts(monkeypatch):
    """Both doctor runs of a test see the same host facts (the first run removes abandoned conversions, say)."""
    import whisperctl.doctor

    facts = whisperctl.doctor.gather()
    monkeypatch.setattr(whisperctl.doctor, "gather", lambda verify_cache=False: facts)


def test_doctor_is_one_line_per_check_at_80_columns(capsys, monkeypatch, same_facts):
    monkeypatch.setenv("COLUMNS", "80")
    code, out, err = run_cli(["doctor", "--json"], capsys)
    assert code == 0, err
    checks = json.loads(out)["checks"]
    code, out, err = run_cli(["doctor"], capsys)
    assert code == 0 and "The default path works." in out, err
    assert max(len(line) for line in out.splitlines()) <= 80, out
    for k, block in _doctor_rows(out, checks).items():
        c = checks[k]
        if c["status"] == "PASS" and c["section"] != "recommendation":
            assert len(block) == 1, block  # no wrapped rows, no details
            shown = block[0].split(c["name"], 1)[1].strip().rstrip("…")
            assert c["why"].startswith(shown) and shown, (block, c["why"])
        if c["status"] in ("WARN", "FAIL") and c["fix"]:
            assert " ".join(" ".join(block).split()).endswith(f"fix: {' '.join(c['fix'].split())}"), block
    # sections head their rows instead of a column repeating them; rows plus details stay well under a screen
    assert len(out.splitlines()) < len(checks) + 25


def test_doctor_verbose_shows_every_reason_and_fix(capsys, monkeypatch, same_facts):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, _ = run_cli(["doctor", "--json"], capsys)
    checks = json.loads(out)["checks"]
    code, out, err = run_cli(["doctor", "-v"], capsys)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 100
    numbers = re.compile(r"\d+(\.\d+)?")  # free memory moves between the two runs
    for k, block in _doctor_rows(out, checks).items():
        # whitespace dropped: a word longer than the line (a path under a deep checkout) is wrapped mid-word
        text = numbers.sub("N", "".join("".join(block).split()))
        c = checks[k]
        assert numbers.sub("N", "".join(c["why"].split())) in text, (block, c)
        assert not c["fix"] or numbers.sub("N", "fix:" + "".join(c["fix"].split())) in text, (block, c)


@pytest.mark.parametrize("width", [40, 80, 120])
def test_doctor_rendering_fits_any_width(width):
    from whisperctl.cli.doctor import render
    from whisperctl.doctor import Check, Status

    checks = [
        Check("versions", "torch", Status.PASS, "2.13.0 (floor 2.3: sdpa_kernel backend pinning; Whisper SDPA needs 2.1.1)"),
        Check("versions", "flash-attn", Status.FAIL, "2.7.4 installed but import fails: undefined symbol: "
              "_ZN3c104cuda9SetDeviceEab_a_very_long_unbreakable_symbol_name_here", "reinstall flash-attn built for this torch/CUDA"),
        Check("recommendation", "--attn auto --dtype auto --quantize auto", Status.PASS,
              "device cuda:0, dtype fp16, quantization none, attention sdpa — auto → sdpa (flash-attn not installed)"),
        Check("models", "damaged cache entry", Status.WARN, "/a/very/long/path/" * 6 + ": size differs", "nothing to do"),
    ]
    lines = [line.plain for line in render(checks, width)]
    assert max(len(line) for line in lines) <= width, lines
    assert [line for line in lines if not line.startswith(" ")] == ["versions", "recommendation", "models"]
    torch_row = next(line for line in lines if "torch" in line)
    assert torch_row.startswith("  PASS  torch ") and (len(torch_row) == width or torch_row.endswith("2.1.1)"))
    joined = " ".join(" ".join(lines).split())
    assert "fix: reinstall flash-attn built for this torch/CUDA" in joined and "fix: nothing to do" in joined
    assert "attention sdpa" in joined and "auto → sdpa" not in joined  # the derivation is -v's


def _fake_bench_result(model="tiny.en"):
    def row(attn, status="ok", **kw):
        r = dict(model=model, attention=attn, dtype="fp32", quantization="int8", batch_size=8, status=status)
        if status == "ok":
            r.update(latency_median_s=0.839, latency_p90_s=1.086, rtfx_median=9.4, tokens_per_s=38.1, encoder_share=0.58,
                     peak_rss_bytes=834 << 20, wer=0.0353, speedup=1.0, same_text="baseline")
        r.update(kw)
        return r

    skip = "skipped: flash_attention_2 needs an NVIDIA CUDA GPU; this run uses cpu"
    return {
        "environment": {"cpu_model": "AMD EPYC 7B13 64-Core Processor", "torch": "2.13.0+cpu", "transformers": "5.24.0",
                        "torch_threads": 2},
        "spec": {"base": {}, "warmup": 2, "repeats": 5, "baseline": "eager"}, "inputs": [{"duration_s": 7.9}],
        "rows": [row("eager"), row("sdpa", rtfx_median=16.1, speedup=1.71, same_text="2.3 % vs base"),
                 row("flash_attention_2", skip, dtype="auto", quantization="auto"),
                 row("flash_attention_2", skip, dtype="auto", quantization="none")],
    }


@pytest.mark.parametrize("width", [60, 80, 100, 140])
def test_bench_table_fits_the_terminal_and_says_what_it_left_out(capsys, monkeypatch, width):
    from whisperctl.bench import report

    monkeypatch.setenv("COLUMNS", str(width))
    result = _fake_bench_result()
    report.print_table(result)
    out = capsys.readouterr().out
    assert max(len(line) for line in out.splitlines()) <= width, out
    flat = " ".join(out.split())
    for title in ("attn", "RTFx", "speedup", "same text", "status", "WER %"):  # the last columns to give way
        assert f" {title} " in flat, out
    assert "2.3 % vs base" in flat or width < 80
    if width < 200:  # the full table is ~170 columns: something was folded or dropped, and the table says what
        assert "every row: model tiny.en, dtype fp32, quant int8, batch 8" in flat
        assert "[1] flash_attention_2 needs an NVIDIA CUDA GPU; this run uses cpu" in flat
        assert "skipped [1]" in flat or width < 80  # narrower, the status cell folds too
        assert flat.count("[1] flash_attention_2") == 1  # two rows, one reason, one note
    markdown = report.to_markdown(result)
    assert "| model | attn | dtype | quant | batch | lat med s | lat p90 s | RTFx | tok/s | enc % | mem MiB | WER % |" in markdown


def test_bench_table_in_a_pipe_keeps_every_column(capsys, monkeypatch):
    from whisperctl.bench import report

    monkeypatch.delenv("COLUMNS", raising=False)
    report.print_table(_fake_bench_result())
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any("lat p90 s" in line and "enc %" in line and "model" in line for line in lines)
    assert sum("skipped: flash_attention_2 needs an NVIDIA CUDA GPU; this run uses cpu" in line for line in lines) == 2


def test_bench_cli_table_fits_100_columns(capsys, monkeypatch, tiny_random_model, tmp_path):
    monkeypatch.setenv("COLUMNS", "100")
    code, out, err = run_cli(["bench", "--models", tiny_random_model, "--compare", "eager,sdpa,fa2", "--max-new-tokens", "4",
                              "--warmup", "0", "--repeats", "1", "--json", tmp_path / "b.json", "--markdown", tmp_path / "b.md"],
                             capsys)
    assert code == 0, err
    assert max(len(line) for line in out.splitlines()) <= 100, out
    assert "RTFx" in out and "speedup" in out and "not shown at 100 columns: lat p90 s" in out
    assert "| lat p90 s |" in (tmp_path / "b.md").read_text()  # the export keeps every column
    data = json.loads((tmp_path / "b.json").read_text())
    assert [r["same_text"] for r in data["rows"][:2]][0] == "baseline"


def test_same_text_column_gives_the_wer_against_the_baseline():
    from whisperctl.bench import runner

    spec = runner.BenchSpec(EngineConfig(), ("tiny.en",), (Attention.EAGER, Attention.SDPA), (EngineConfig().dtype,),
                            (EngineConfig().quantization,), (8,))

    def rows(*texts):
        made = [{"model": "tiny.en", "attention": a, "dtype": "fp32", "quantization": "int8", "batch_size": 8,
                 "decoder_option": "auto", "status": "ok",
                 "rtfx_median": 10.0, "texts": t} for a, t in zip(("eager", "sdpa"), texts)]
        runner.compare_rows(made, spec)
        return made[1]

    base = ["The cat sat on the mat.", "A dog barked twice at night."]
    assert rows(base, list(base))["same_text"] == "same"
    changed = rows(base, ["The cat sat on a mat.", "A dog barked twice at night."])  # 1 word in 12
    assert changed["same_text"] == "8.3 % vs base" and changed["text_wer_vs_baseline"] == pytest.approx(1 / 12)
    assert rows(base, ["the cat sat on the mat", "A dog barked twice at night!"])["same_text"] == "same words"
    assert rows(["", ""], ["words", ""])["same_text"] == "differs (baseline empty)"


def test_the_command_exits_at_once_and_loses_nothing(tmp_path):
    """The console script (`whisperctl.cli:run`) ends without tearing torch down object by object (start-up), after
    the exit handlers: outputs complete, exit codes kept, and a thread still working is waited for."""
    import subprocess
    import sys

    run = [sys.executable, "-c", "from whisperctl.cli import run; run()"]
    main = [sys.executable, "-c", "from whisperctl.cli import main; main()"]
    clip = str(EXAMPLES / "short.wav")
    fast = subprocess.run([*run, "transcribe", clip, "-o", str(tmp_path), "-f", "srt"], capture_output=True, text=True,
                          timeout=300)
    slow = subprocess.run([*main, "transcribe", clip, "-f", "srt"], capture_output=True, text=True, timeout=300)
    assert fast.returncode == slow.returncode == 0, fast.stderr
    assert (tmp_path / "short.srt").read_text() == slow.stdout and "-->" in slow.stdout  # the file whole
    helps = [subprocess.run([*exe, "transcribe", "--help"], capture_output=True, text=True, timeout=120) for exe in (run, main)]
    assert helps[0].returncode == 0 and helps[0].stdout == helps[1].stdout and len(helps[0].stdout) > 2000  # stdout whole
    usage = subprocess.run([*run, "transcribe", "--bogus"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2 and usage.stderr.startswith("whisperctl: error: No such option: --bogus")
    failed = subprocess.run([*run, "transcribe", str(tmp_path / "missing.wav")], capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "no such file" in failed.stderr
    # a (non-daemon) thread still working when the command ends: the normal exit, which waits for it
    marker = tmp_path / "thread-finished"
    script = ("import threading, time\nfrom whisperctl.cli import run\n"
              f"threading.Thread(target=lambda: (time.sleep(1.0), open({str(marker)!r}, 'w').write('done'))).start()\n"
              "run()\n")
    waited = subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True, text=True, timeout=120)
    assert waited.returncode == 0 and waited.stdout.startswith("whisperctl ")
    assert marker.read_text() == "done"
