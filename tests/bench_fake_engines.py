"""Fake engines for tests/test_bench_engines.py, registered the way the real ones are (``register``) and found by
parent and child processes through ``WHISPERCTL_BENCH_ENGINES=bench_fake_engines``.

``fake`` and ``fake-twin`` answer "hello world" for a 1 s input and "good friend" otherwise, and append what they
were asked for to the file named by ``FAKE_ENGINE_LOG`` (with their process id), taking ``FAKE_ENGINE_SLEEP`` seconds
per input when that is set; ``fake-crash`` fails to load; ``fake-missing`` needs a
distribution that is not installed."""

from __future__ import annotations

import dataclasses
import json
import os
import time

from whisperctl.bench.engines import Engine, EngineRequest, register


class FakeSession:
    def __init__(self, name: str, request: EngineRequest):
        log = os.environ.get("FAKE_ENGINE_LOG")
        if log:
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"engine": name, "pid": os.getpid(), **dataclasses.asdict(request)}) + "\n")
        self.ran = {"compute": request.dtype, "attention": "fake", "batch": request.batch_size or 1, "beam": request.beam_size,
                    "chunking": "whole file", "vad": request.vad or "none", "fallback": False}

    def transcribe(self, samples) -> str:
        time.sleep(float(os.environ.get("FAKE_ENGINE_SLEEP", "0")))
        return "hello world" if len(samples) == 16000 else "good friend"


def _crash(request: EngineRequest):
    raise RuntimeError("the fake engine cannot load")


for _name in ("fake", "fake-twin"):
    register(Engine(name=_name, summary="a fake", imports=lambda: None, load=lambda r, n=_name: FakeSession(n, r)))
register(Engine(name="fake-crash", summary="fails to load", imports=lambda: None, load=_crash))
register(Engine(name="fake-missing", summary="not installed", imports=lambda: None, load=_crash,
                distributions=("whisperctl-no-such-distribution",), install="pip install whisperctl-no-such-distribution"))
