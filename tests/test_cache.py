"""The converted-model cache heals itself: damage is found (quick check on load, full hash after a load error and
in doctor), the entry is rebuilt from the bundled model with one warning, and killed conversions are swept."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import EXAMPLES, ROOT
from whisperctl import EngineConfig, Transcriber, cache, models


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A private cache with a freshly converted bundled model."""
    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    entry = cache.converted_checkpoint(models.bundled_dir(), models.BUNDLED_SHA256)
    return entry


def _keep_mtime(path: Path, change) -> None:
    st = path.stat()
    change(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


DAMAGE = {
    "truncated safetensors": lambda e: os.truncate(e / "model.safetensors", (e / "model.safetensors").stat().st_size // 2),
    "garbage config.json": lambda e: (e / "config.json").write_text("{ this is not json"),
    "garbage tokenizer.json": lambda e: (e / "tokenizer.json").write_bytes(os.urandom(5000)),
    "deleted tokenizer.json": lambda e: (e / "tokenizer.json").unlink(),
    "zeroed megabytes in the weights": lambda e: _overwrite(e / "model.safetensors", 20 << 20, bytes(4 << 20)),
    "random megabytes in the weights": lambda e: _overwrite(e / "model.safetensors", 30 << 20, os.urandom(4 << 20)),
}


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        fh.write(data)


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_entry_is_found_and_rebuilt_on_load(own_cache, damage, caplog):
    DAMAGE[damage](own_cache)
    assert cache.verify_entry(own_cache, full=True), "the full check sees the damage"
    with caplog.at_level(logging.WARNING, logger="whisperctl"):
        result = Transcriber(EngineConfig(device="cpu")).transcribe(str(EXAMPLES / "short.wav"))
    assert len(result.text.split()) >= 8, result.text  # the real model again, not an empty or garbage transcript
    warnings = [r.getMessage() for r in caplog.records if "rebuilding it" in r.getMessage()]
    assert len(warnings) == 1 and "damaged" in warnings[0]
    assert cache.verify_entry(own_cache, full=True) == []


def test_damage_with_the_modification_time_restored_is_caught_after_a_load_error(own_cache, caplog):
    """The quick check trusts an unchanged mtime; a load that then fails triggers the full hash and a rebuild."""
    _keep_mtime(own_cache / "config.json", lambda p: p.write_text("{ broken" + " " * (p.stat().st_size - 8)))
    assert cache.verify_entry(own_cache) == [], "the quick check cannot see it"
    with caplog.at_level(logging.WARNING, logger="whisperctl"):
        result = Transcriber(EngineConfig(device="cpu")).transcribe(str(EXAMPLES / "short.wav"))
    assert len(result.text.split()) >= 8
    assert any("rebuilding it" in r.getMessage() for r in caplog.records)


def test_doctor_verify_cache_hashes_every_file_and_reports_damage(own_cache):
    from whisperctl import doctor

    assert doctor.gather(verify_cache=True).cache_damage == ()
    _keep_mtime(own_cache / "model.safetensors", lambda p: _overwrite(p, 10 << 20, bytes(1 << 20)))
    assert doctor.gather().cache_damage == (), "the quick check trusts an unchanged modification time"
    facts = doctor.gather(verify_cache=True)
    assert len(facts.cache_damage) == 1 and "model.safetensors does not match its recorded hash" in facts.cache_damage[0]
    from whisperctl.eligibility import probe

    checks = [c for c in doctor.run_checks(probe(), facts) if c.name == "damaged cache entry"]
    assert len(checks) == 1 and checks[0].status == doctor.Status.WARN and "rebuilt" in checks[0].fix


def test_a_killed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    """SIGKILL mid-conversion leaves a temporary directory; the next conversion (and doctor) removes it."""
    env = {**os.environ, "WHISPERCTL_CACHE": str(tmp_path / "cache")}
    script = ("import time, whisperctl.ct2 as c; real = c.convert\n"
              "def slow(src, out):\n    r = real(src, out); time.sleep(60); return r\n"
              "c.convert = slow\n"
              "from whisperctl import cache, models; cache.converted_checkpoint(models.bundled_dir(), models.BUNDLED_SHA256)")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=ROOT)
    root = tmp_path / "cache" / "converted"
    deadline = time.time() + 120
    while time.time() < deadline and not any(root.glob(".*/ckpt/model.safetensors")):
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    leftovers = [p for p in root.iterdir() if p.name.startswith(".")]
    assert leftovers, "the kill left a temporary directory (the case under test)"
    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    assert sorted(cache.remove_abandoned()) == sorted(leftovers)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]


def test_a_live_conversion_is_not_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPERCTL_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "converted"
    live = root / ".model-x.abc"
    live.mkdir(parents=True)
    import socket

    (live / "owner.json").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    fresh_unknown = root / ".model-y.def"
    fresh_unknown.mkdir()
    assert cache.remove_abandoned() == []
    assert live.is_dir() and fresh_unknown.is_dir()
