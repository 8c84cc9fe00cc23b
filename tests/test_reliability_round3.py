"""Reliability, round 3 (issue 27): lying WAV headers, outputs on one path, an unwritable cache, an unreachable
hub, a closed stdin or pipe, a full disk under the cache, a damaged assembled model, and options too small to mean
anything."""

from __future__ import annotations

import pytest

from conftest import EXAMPLES, run_cli


@pytest.fixture
def no_bench_run(monkeypatch):
    from whisperctl.bench import runner

    monkeypatch.setattr(runner, "run", lambda *a, **k: pytest.fail("the benchmark ran before its arguments were checked"))


# ----------------------------------------------------------------- bench: two outputs on one file, no time to time
@pytest.mark.parametrize("second", ["r.json", "./r.json", "sub/../r.json"])
def test_bench_two_outputs_on_one_path_is_a_usage_error(tmp_path, capsys, monkeypatch, no_bench_run, second):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    code, _, err = run_cli(["bench", "--json", "r.json", "--csv", second], capsys)
    assert code == 2, err
    assert err.startswith("whisperctl: error: --json and --csv both write ") and len(err.strip().splitlines()) == 1
    assert err.strip().endswith("; give each output its own file.")
    assert not (tmp_path / "r.json").exists()


def test_bench_duration_too_short_to_time_is_a_usage_error(capsys, no_bench_run):
    code, _, err = run_cli(["bench", "--duration", "0.001"], capsys)
    assert code == 2, err
    assert err.strip() == ("whisperctl: error: --duration: 0.001 is outside [1, 14400] seconds "
                           "(under a second there is too little audio to time).")
