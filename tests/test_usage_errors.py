"""Every usage error exits 2 with one line, before any model loads; write failures of stdout exit 1 cleanly.

Click parse errors are raised by click itself (typer < 0.25) or by the copy typer ≥ 0.25 vendors; both must
exit 2. The installed typer is tested in-process; typer 0.12 (with real click) in a subprocess when it can
be installed from the package index into a cache beside the virtual environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT, run_cli

J = str(EXAMPLES / "short.wav")

PARSE_ERRORS = [
    (["--bogus"], "No such option: --bogus"),
    (["transcribe"], "Missing argument"),
    (["transcribe", J, "--threads", "x"], "Invalid value for '--threads'"),
    (["transcribe", J, "--model"], "requires an argument"),
    (["nosuchcmd"], "No such command 'nosuchcmd'"),
    (["transcribe", "-take2.wav"], "Write ./-take2.wav or put it after --"),
    (["bench", "--repeats", "1.5"], "Invalid value for '--repeats'"),
    (["doctor", "--nope"], "No such option: --nope"),
    (["transcribe", J, "--best-of", "0"], "--best-of: must be an integer ≥ 1, got 0"),
]


@pytest.mark.parametrize("args, fragment", PARSE_ERRORS)
def test_click_parse_errors_exit_2_in_one_line(capsys, args, fragment, no_model_load):
    code, out, err = run_cli(args, capsys)
    assert code == 2, err
    assert fragment in err and "internal error" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("whisperctl: error: ")


def test_bare_command_prints_help_and_exits_0(capsys):
    code, out, err = run_cli([], capsys)
    assert code == 0 and "transcribe" in (out + err)


def _old_typer_path() -> Path:
    """typer 0.12.5 + click 8.1.8 (the oldest typer pyproject allows, before typer vendored click)."""
    target = Path(sys.prefix) / "compat" / "typer-0.12.5"
    if not (target / "typer" / "__init__.py").is_file():
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
             "--target", str(target), "typer==0.12.5", "click==8.1.8"],
            capture_output=True, text=True, timeout=300,
        )
        if proc.returncode != 0:
            pytest.skip(f"typer 0.12.5 cannot be installed here (no package index?): {proc.stderr.strip()[-200:]}")
    return target


def test_parse_errors_exit_2_with_typer_using_click_itself(tmp_path):
    """The same cases under typer 0.12 (click's own exception classes)."""
    target = _old_typer_path()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), str(ROOT)])}
    script = ("import sys, typer, click; "
              "print(typer.__version__, click.__version__, file=sys.stderr); "
              "from whisperctl.cli import main; main()")
    for args, fragment in PARSE_ERRORS:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                              timeout=120, cwd=tmp_path)
        version_line, *rest = proc.stderr.splitlines()
        assert version_line.startswith("0.12.5 8.1.8"), proc.stderr
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(rest) == 1 and fragment in rest[0] and "internal error" not in rest[0], (args, proc.stderr)


# ----------------------------------------------------------------- option values: exit 2 before loading
# (the bound of each option: tests/test_cli.py::test_bad_options_are_usage_errors_before_loading)
def test_beam_times_batch_beyond_memory_is_refused_with_a_fitting_batch(capsys, no_model_load):
    """tiny.en fp32: 20 MB of keys/values per sequence; 32 × 512 sequences need > 300 GB."""
    code, _, err = run_cli(["transcribe", J, "--beam-size", "32", "--batch-size", "512"], capsys)
    assert code == 2, err
    assert "needs at least" in err and "Fix: use --batch-size" in err


def test_memory_bound_is_a_lower_bound_of_what_decoding_holds():
    from whisperctl import models
    from whisperctl.config import DType, Quantization
    from whisperctl.eligibility import memory_needed

    arch = models.architecture("tiny.en")
    one = memory_needed(arch, DType.FP32, Quantization.NONE, 1, 1)
    thousand = memory_needed(arch, DType.FP32, Quantization.NONE, 1, 1000)
    per_sequence = (thousand - one) / 999
    assert 19e6 < per_sequence < 21e6  # 2 × 4 layers × (1500 + 128) positions × 384 × 4 bytes
    assert 19e9 < thousand < 24e9  # a lower bound of the 24 GB at which the kernel killed --beam-size 1000
    large = models.architecture("large-v3")
    assert 240e6 < (memory_needed(large, DType.FP16, Quantization.NONE, 1, 2) - memory_needed(large, DType.FP16, Quantization.NONE, 1, 1)) < 280e6


# ----------------------------------------------------------------- config files
@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"engine = 5\n", "'engine' must be a table"),
        (b"[engnie]\nmodel = 'tiny.en'\n", "unknown table [engnie]. Valid: [engine], [bench]. Did you mean 'engine'?"),
        (b"[engine]\nmodle = 'tiny.en'\n", "unknown key 'modle' in [engine]. Did you mean 'model'?"),
        (b"[bench]\nrepeat = 3\n", "unknown key 'repeat' in [bench]"),
        (b"\xff\xfe[engine]\n", "not UTF-8"),
        (b"[engine]\nbatch_size = '8'\n", "--batch-size: must be an integer"),
        (b"[engine]\ninitial_prompt = 5\n", "--initial-prompt: must be text"),
        (b"[engine]\nallow_pickle = 'yes'\n", "--allow-pickle: must be true or false"),
        (b"[engine]\ndecode_tokens = 449\n", "--decode-tokens: 449 is above the maximum 448"),
        (b"[engine]\nhalve_on_oom = 'no'\n", "halve_on_oom: must be true or false"),
        (b"[engine]\n[engine.sub]\nx = 1\n", "must be a value, not a table"),
    ],
)
def test_bad_config_files_are_usage_errors(tmp_path, capsys, content, fragment, no_model_load):
    cfg = tmp_path / "preset.toml"
    cfg.write_bytes(content)
    code, _, err = run_cli(["transcribe", J, "--config", cfg], capsys)
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_shipped_presets_still_load_in_both_commands(capsys, no_model_load):
    from whisperctl.config import EngineConfig
    from whisperctl.presets import load_config_file

    for preset in sorted((ROOT / "configs").glob("*.toml")):
        data = load_config_file(preset)
        EngineConfig.from_mapping(data["engine"])


# ----------------------------------------------------------------- bench: everything checked before the run
@pytest.fixture
def no_bench_run(monkeypatch):
    from whisperctl.bench import runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("the benchmark ran before its arguments were checked"))


@pytest.mark.parametrize(
    "make, flags, fragment",
    [
        (None, ["--duration", "nan"], "--duration: nan is outside"),
        (None, ["--duration", "inf"], "--duration: inf is outside"),
        (None, ["--duration", "-5"], "--duration"),
        (None, ["--json", "/nonexistent-dir/x.json"], "--json /nonexistent-dir/x.json: the directory"),
        (None, ["--markdown", "/"], "is a directory"),
        ("list.json", ["--compare-to", "{p}"], "not a whisperctl bench JSON"),
        ("bad.json", ["--compare-to", "{p}"], "not UTF-8"),
        (None, ["--compare-to", "/nonexistent.json"], "no such file"),
        ("manifest.tsv", ["--manifest", "{p}"], "--manifest"),
        (None, ["--warmup", "-1"], "--warmup: must be an integer in [0, 1000]"),
        (None, ["--batch-sizes", "1,100000"], "batch sizes must be in [1, 512]"),
        (None, ["--decode-tokens", "0"], "--decode-tokens: must be an integer ≥ 1, got 0."),
        (None, ["--decode-tokens", "449"], "--decode-tokens: 449 is above the maximum 448"),
    ],
)
def test_bench_arguments_fail_before_the_run(tmp_path, capsys, make, flags, fragment, no_bench_run):
    files = {"list.json": b"[1, 2]", "bad.json": b"\xff\xfe{}", "manifest.tsv": b"file\treference_text\n\xff.wav\tx\n"}
    p = tmp_path / (make or "unused")
    if make:
        p.write_bytes(files[make])
    code, _, err = run_cli(["bench", *[f.format(p=p) for f in flags]], capsys)
    assert code == 2, err
    assert fragment in err and len(err.strip().splitlines()) == 1


def test_bench_output_to_an_unwritable_directory_fails_before_the_run(tmp_path, capsys, no_bench_run):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere; the directory case above covers the check")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    code, _, err = run_cli(["bench", "--csv", locked / "x.csv"], capsys)
    assert code == 2 and "--csv" in err


# ----------------------------------------------------------------- stdout that cannot be written
def test_stdout_to_dev_full_is_one_line_exit_1(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    exe = [sys.executable, "-c", "from whisperctl.cli import main; main()"]
    for args in (["--help"], ["transcribe", J, "-q"], ["transcribe", J, "-q", "-f", "json"]):
        with open("/dev/full", "w") as full:
            proc = subprocess.run(exe + args, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300, cwd=ROOT)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1] == "whisperctl: error: cannot write the output: No space left on device."
        assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr


def test_json_result_names_its_input(tmp_path, capsys, tiny_random_model):
    code, out, err = run_cli(["transcribe", J, "-f", "json", "-q", "--model", tiny_random_model,
                             "--max-new-tokens", "4", "--temperature", "0"], capsys)
    assert code == 0, err
    origin = json.loads(out)["origin"]
    assert origin["input"] == os.path.realpath(J) and origin["size"] == os.path.getsize(J) and len(origin["fingerprint"]) == 32


def test_second_pass_cases_are_usage_errors(tmp_path, capsys, no_model_load):
    cases = [
        (["doctor", "--model", "bogus"], "--model bogus: unknown model"),
        (["transcribe", J, "--initial-prompt", "\udcff"], "--initial-prompt: not valid UTF-8"),
        (["bench", "--audio", str(tmp_path / "missing.wav")], "--audio"),
    ]
    if os.path.exists("/dev/full"):
        cases.append((["transcribe", J, "--failures", "/dev/full"], "not a regular file"))
    for args, fragment in cases:
        code, _, err = run_cli(args, capsys)
        assert code == 2 and fragment in err, (args, err)
    if os.path.exists("/dev/full"):
        import stat

        assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full is still the device"
