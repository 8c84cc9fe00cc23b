"""Build ``.gpu/``: what the GPU acceptance run (benchmarks/gpu_acceptance.sh) carries to a bare GPU machine.

The device has CUDA torch, transformers and most of the scientific stack, but no package index and a 64 MiB
limit on what travels. The bundled model (75.5 MB of fp16 weights) does not fit, so this writes an int8 copy
of it in the same CTranslate2 format (per-row scales, as CTranslate2's own int8 uses; 38 MB), which whisperctl
converts like any CTranslate2 directory. Its WER against the fp16 original is measured here and printed.

    python benchmarks/gpu_assets.py            # writes .gpu/ (ignored by git; name it in the device call's carry)

Contents: .gpu/tiny.en-int8/ (model), .gpu/speech/ (JFK, LJ 231 s as FLAC, references.tsv), .gpu/wheels/
(soundfile, soxr and jiwer with the dependencies the device lacks, for CPython 3.12 manylinux x86-64).
"""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu"
SPEECH = ROOT.parent / "shared" / "speech"

#: Missing on the device image (KINDS.md lists what it has). Versions pinned so one of each travels.
WHEELS = ["soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12", "soxr==1.1.0", "jiwer==4.0.0", "rapidfuzz==3.14.6"]
_INT8, _FLOAT32, _FLOAT16 = 1, 0, 4


def _string(s: str) -> bytes:
    raw = s.encode() + b"\x00"
    return struct.pack("<H", len(raw)) + raw


def write_int8_model_bin(src: Path, dst: Path) -> None:
    """``src`` model.bin with every 2-D weight matrix quantized to int8 with a per-row ``<name>_scale``."""
    from whisperctl.ct2 import read_model_bin

    spec, variables = read_model_bin(src)
    unique: dict[int, str] = {}
    aliases: list[tuple[str, str]] = []
    out: list[tuple[str, np.ndarray]] = []
    for name, array in variables.items():
        if id(array) in unique:
            aliases.append((name, unique[id(array)]))
            continue
        unique[id(array)] = name
        if array.ndim == 2 and name.endswith("weight") and array.dtype in (np.float16, np.float32) and array.size > 4096:
            w = array.astype(np.float32)
            scale = 127.0 / np.maximum(np.abs(w).max(axis=1), 1e-8)
            out.append((name, np.clip(np.rint(w * scale[:, None]), -127, 127).astype(np.int8)))
            out.append((name + "_scale", scale.astype(np.float32)))
        else:
            out.append((name, np.ascontiguousarray(array)))
    codes = {np.dtype(np.int8): _INT8, np.dtype(np.float32): _FLOAT32, np.dtype(np.float16): _FLOAT16,
             np.dtype(np.int16): 2, np.dtype(np.int32): 3}
    with dst.open("wb") as fh:
        fh.write(struct.pack("<I", 6) + _string(spec) + struct.pack("<I", 1) + struct.pack("<I", len(out)))
        for name, array in out:
            fh.write(_string(name) + struct.pack("<B", array.ndim) + b"".join(struct.pack("<I", d) for d in array.shape))
            data = array.tobytes()
            fh.write(struct.pack("<B", codes[array.dtype]) + struct.pack("<I", len(data)) + data)
        fh.write(struct.pack("<I", len(aliases)) + b"".join(_string(a) + _string(t) for a, t in aliases))


def build_model() -> Path:
    from whisperctl import models

    src = models.bundled_dir()
    dst = OUT / "tiny.en-int8"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(src / name, dst / name)
    write_int8_model_bin(src / "model.bin", dst / "model.bin")
    return dst


def build_speech() -> None:
    import soundfile as sf

    speech = OUT / "speech"
    speech.mkdir(parents=True, exist_ok=True)
    with (SPEECH / "MANIFEST.tsv").open() as fh:
        refs = {r["file"]: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}
    jfk = "whisper/jfk.flac"
    shutil.copy(SPEECH / jfk, speech / "jfk.flac")
    lj, sr = sf.read(SPEECH / "TTS/LJ001-0001_to_0032_concat.wav", dtype="int16")
    sf.write(speech / "lj231.flac", lj, sr, subtype="PCM_16")
    lj_ref = " ".join(refs[f"TTS/LJ001-{i:04d}.wav"] for i in range(1, 33))
    with (speech / "references.tsv").open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["file", "reference_text"])
        w.writerow(["jfk.flac", refs[jfk]])
        w.writerow(["lj231.flac", lj_ref])


def fetch_wheels() -> None:
    wheels = OUT / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34, 35)] + ["--platform=manylinux2014_x86_64"]
    for spec in WHEELS:
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
               "--implementation", "cp", *platforms, "-d", str(wheels), spec]
        subprocess.run(cmd, check=True)


def check_model(model: Path) -> None:
    """The int8 copy's WER next to the original's, on the examples (CPU, fp32): the GPU runs compare against it."""
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.wer import wer

    ref = (ROOT / "examples" / "long.txt").read_text()
    for label, name in (("bundled fp16 weights", "tiny.en"), ("int8 copy", str(model))):
        t = Transcriber(EngineConfig(model=name, device="cpu", quantization="none"))
        text = t.transcribe(str(ROOT / "examples" / "long.flac")).text
        print(f"{label}: examples/long.flac WER {wer([ref], [text]):.3f}")


def main() -> None:
    model = build_model()
    build_speech()
    fetch_wheels()
    check_model(model)
    size = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"{OUT}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
