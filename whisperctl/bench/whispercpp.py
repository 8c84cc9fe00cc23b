"""The ``whisper.cpp`` engine of ``bench --engines``: whisper.cpp through pywhispercpp, on the model whisperctl
loads written once in its ggml format (:mod:`whisperctl.ggml`).

It runs whisper.cpp's ``whisper_full`` with whisper.cpp's defaults except what every engine is given: the threads,
the beam size (beam search when above 1, else greedy), the language (English for English-only models, detected
otherwise). So its fallback is whisper.cpp's own: temperature 0, then +0.2 up to 1.0 (best of 5 sampled), when a
decode's token entropy is below 2.4 (a loop) or its mean log-probability below -1.0; the seeking loop prompts each
window with the text before it. Nothing is printed: its progress and timestamp prints are off, its load log is
kept aside and quoted when the load fails; what it logs while decoding goes to stderr.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from ..errors import ModelError
from .engines import Engine, EngineRequest, local_checkpoint_supports, register

#: whisper.cpp's defaults the row names (``whisper_full_default_params``)
BEST_OF = 5
FALLBACK = "temperature 0 then +0.2 to 1.0 when entropy < 2.4 or avg logprob < -1.0"


def whisper_cpp_version() -> str:
    """The whisper.cpp inside the installed pywhispercpp (its bundled ``libwhisper`` names it)."""
    for file in importlib.metadata.files("pywhispercpp") or ():
        found = re.search(r"libwhisper[^/]*?\.(\d+\.\d+\.\d+)(?:\.dylib)?$", str(file))
        if found:
            return found.group(1)
    return "unknown"


def _imports() -> None:
    import pywhispercpp.model  # noqa: F401


class _WhisperCppSession:
    def __init__(self, request: EngineRequest):
        import _pywhispercpp as pw
        from pywhispercpp.model import Model

        from .. import models
        from ..ggml import GGML_TYPE, ggml_model, multilingual, recorded

        if request.cuda and "CUDA" not in pw.whisper_print_system_info():
            raise ModelError("this pywhispercpp has whisper.cpp's CPU backend only (the PyPI wheel); run it with "
                             "--device cpu, or build pywhispercpp with GGML_CUDA=1.")
        path = ggml_model(models.checkpoint(models.resolve(request.model)))
        # "": whisper.cpp detects the language; English-only models are told theirs
        language = request.language or ("" if multilingual(recorded(path)["hparams"]["n_vocab"]) else "en")
        beam = request.beam_size > 1
        with tempfile.TemporaryFile() as log:
            with _c_stderr_to(log):
                self.model = Model(
                    str(path), params_sampling_strategy=1 if beam else 0,
                    context_params={"use_gpu": request.cuda, "flash_attn": True,
                                    "gpu_device": int(request.device.partition(":")[2] or 0)},
                    n_threads=request.threads, language=language, print_progress=False, print_realtime=False,
                    print_timestamps=False, greedy={"best_of": BEST_OF},
                    beam_search={"beam_size": request.beam_size, "patience": -1.0},
                )
            log.seek(0)
            _check_loaded(path, log.read().decode("utf-8", errors="replace"))
        self.ran = {
            "compute": f"ggml {GGML_TYPE}", "attention": "whisper.cpp flash-attn", "batch": 1,
            "beam": request.beam_size, "best_of": BEST_OF, "threads": request.threads,
            "chunking": "sequential (seek)", "vad": "none", "decoder": f"whisper.cpp {whisper_cpp_version()}",
            "fallback": True, "fallback_rule": FALLBACK, "language": language or "detect",
        }

    def transcribe(self, samples: np.ndarray) -> str:
        segments = self.model.transcribe(np.ascontiguousarray(samples, dtype=np.float32))
        return " ".join(s.text for s in segments)


@contextlib.contextmanager
def _c_stderr_to(file: BinaryIO) -> Iterator[None]:
    """Point file descriptor 2, where whisper.cpp's C log goes, at ``file`` for a while. (pywhispercpp's own
    redirect goes through ``sys.stderr.fileno()`` and, where that is no file, leaves the C log where it was.)"""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        os.dup2(file.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _check_loaded(path: Path, log: str) -> None:
    """pywhispercpp hands back a context even when whisper.cpp failed to load the file (decoding with it would
    crash the process): its log is the only sign."""
    logging.getLogger("whisperctl").debug("whisper.cpp's load log:\n%s", log)
    if "failed to load model" in log:
        errors = [line.strip() for line in log.splitlines() if "ERROR" in line or "failed" in line]
        raise ModelError(f"whisper.cpp cannot load {path}: {'; '.join(errors[-2:])}")


register(Engine(
    name="whisper.cpp",
    summary="whisper.cpp's whisper_full (pywhispercpp), sequential, ggml f16: the same weights in its format",
    imports=_imports, load=_WhisperCppSession, distributions=("pywhispercpp",),
    install="pip install 'whisperctl[whispercpp]'", supports=local_checkpoint_supports,
))
