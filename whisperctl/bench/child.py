"""One engine, one process: ``python -m whisperctl.bench.child SPEC.json`` measures an engine and writes RESULT.

The spec (written by :mod:`whisperctl.bench.compare`) names the engine, its :class:`~.engines.EngineRequest`,
the inputs (16 kHz mono float32 ``.npy`` files, the same for every engine), the warm-up count and where to write
the result. Measured here, inside the process:

* ``imports_s``: the engine's heavy imports; ``load_s``: building the loaded engine (weights, conversion if new);
* warm-up: ``warmup`` uncounted transcriptions of the first input's first 30 s;
* ``wall_s``: from reading the first input to the last segment of the last one (``per_file_s`` per input);
* ``peak_rss_bytes``: the process's peak resident memory (``getrusage``, imports and load included);
  ``peak_vram_bytes`` on CUDA: the process's device memory from NVML (any library's allocations), see
  :class:`_VramPeak`; ``vram_source`` says how it was read.

The result is JSON: ``{"texts", "ran", "imports_s", "load_s", "wall_s", "per_file_s", …}`` or ``{"error": …}``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from .engines import SAMPLE_RATE, EngineRequest, registry
from .processes import die_with_parent


class _VramPeak:
    """This process's peak device memory, sampled every 20 ms from NVML (pynvml, or ``nvidia-smi`` without it).

    NVML sees every library's allocations (CTranslate2's too). Where it cannot see this process (a container's
    pid namespace) the device's used memory above what was in use at the start is taken instead
    (``source`` says which); torch's peak reserved memory is the floor when torch ran."""

    def __init__(self, device: str):
        self.index = int(device.partition(":")[2] or 0)
        self.peak = 0
        self.source = "none"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._nvml: Any = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
        except Exception:  # noqa: BLE001 — no pynvml: nvidia-smi, or torch's counters
            self._nvml = None
        self._baseline = self._sample()[1]

    def _sample(self) -> tuple[int | None, int | None]:
        """(this process's bytes or None when not visible, the device's used bytes or None)."""
        try:
            if self._nvml is not None:
                procs = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
                mine = [p.usedGpuMemory or 0 for p in procs if p.pid == os.getpid()]
                return (sum(mine) if mine else None), int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)
            import subprocess

            smi = lambda q, f: subprocess.run(  # noqa: E731
                ["nvidia-smi", f"--query-{q}", "--format=csv,noheader,nounits", "-i", str(self.index)],
                capture_output=True, text=True, timeout=5, check=True).stdout.split("\n")
            mine = [int(line.split(",")[1]) for line in smi("compute-apps=pid,used_memory", None)
                    if line.strip() and int(line.split(",")[0]) == os.getpid()]
            used = int(smi("gpu=memory.used", None)[0])
            return (sum(mine) * 2**20 if mine else None), used * 2**20
        except Exception:  # noqa: BLE001 — no NVML at all
            return None, None

    def _run(self) -> None:
        while not self._stop.wait(0.02 if self._nvml is not None else 0.2):
            mine, used = self._sample()
            if mine is not None:
                self.peak, self.source = max(self.peak if self.source == "nvml" else 0, mine), "nvml"
            elif used is not None and self._baseline is not None and self.source != "nvml":
                self.peak, self.source = max(self.peak, used - self._baseline), "nvml device delta"

    def __enter__(self) -> "_VramPeak":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if "torch" in sys.modules:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                reserved = int(torch.cuda.max_memory_reserved(self.index))
                if reserved > self.peak:  # NVML absent, or it sampled between allocations
                    self.peak, self.source = reserved, "torch reserved"


def _sync(request: EngineRequest) -> None:
    if request.cuda and "torch" in sys.modules:
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.synchronize()


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one engine over the inputs as the module docstring says; return the result."""
    engine = registry()[spec["engine"]]
    request = EngineRequest(**spec["request"])
    inputs = spec["inputs"]
    vram = _VramPeak(request.device) if request.cuda else None
    with vram if vram is not None else contextlib.nullcontext():
        t0 = time.perf_counter()
        engine.imports()
        imports_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        session = engine.load(request)
        _sync(request)
        load_s = time.perf_counter() - t0
        if spec.get("warmup", 0) and inputs:
            warm = np.load(inputs[0]["path"])[: 30 * SAMPLE_RATE]
            for _ in range(spec["warmup"]):
                session.transcribe(warm)
        texts, per_file = [], []
        _sync(request)
        started = time.perf_counter()
        arrays = (np.load(item["path"]) for item in inputs)
        together = hasattr(session, "transcribe_all")  # the inputs in one call, as its users run a folder
        t0 = started
        for text in session.transcribe_all(arrays) if together else map(session.transcribe, arrays):
            texts.append(text)
            _sync(request)
            per_file.append(time.perf_counter() - t0)  # one by one: this input's load and run; together: since the last
            t0 = time.perf_counter()
        wall_s = time.perf_counter() - started
    ran = {**session.ran, "inputs": "together"} if together else session.ran
    out = {
        "engine": engine.name, "version": engine.version(), "ran": ran, "texts": texts,
        "imports_s": imports_s, "load_s": load_s, "wall_s": wall_s, "per_file_s": per_file,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    if vram is not None:
        out["peak_vram_bytes"], out["vram_source"] = vram.peak, vram.source
    return out


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if spec.get("parent_pid"):  # started by bench --engines: never outlive it
        die_with_parent(int(spec["parent_pid"]))
    logging.getLogger("whisperctl").setLevel(logging.ERROR)
    try:
        result = measure(spec)
        code = 0
    except Exception as exc:  # noqa: BLE001 — reported as the row's status by the parent
        if os.environ.get("WHISPERCTL_DEBUG", "") not in ("", "0"):
            raise
        result, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    Path(spec["result"]).write_text(json.dumps(result, default=str), encoding="utf-8")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
