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


def test_cpu_transcribe_prints_nothing_on_stderr(capsys, tiny_random_model, monkeypatch):
    monkeypatch.delenv("WHISPERCTL_DEBUG", raising=False)
    code, out, err = run_cli(_transcribe(tiny_random_model), capsys)
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
