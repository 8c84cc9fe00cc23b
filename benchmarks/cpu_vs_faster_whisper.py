"""whisperctl vs faster-whisper (and the other engines) on the CPU: the workloads, measured by ``whisperctl bench --engines``.

This script only builds the inputs and calls the command; the measurement (one process per engine and repeat,
alternating order, the same 16 kHz samples, threads, beam size and compute type for every engine, load reported
apart, WER per file) is ``whisperctl bench --engines``'s, described in docs/bench.md.

Workloads (``--workload``):
  folder  W1: every clip of ../shared/speech/MANIFEST.tsv except the 231 s concatenation
  long    W2: the LJ Speech 231 s file
  tiled   W3: the LJ file tiled to ``--tiled-minutes`` (default 58 min), written once to a temporary folder
  s1      the 32 LJ clips joined by digital silences of 2-60 s (uniform, seed 13): about 80 % silence
  s2      s1 with white or pink noise (alternating) in the gaps, 20 dB below the speech's RMS
  s3      three files of no speech: 60 s of noise, 60 s of music-like tones, 60 s of digital silence
          (WER is undefined: the words transcribed are counted instead; the target is none)

Each workload's files get their reference beside them (``<stem>.txt``), so bench scores them. Examples:

    pip install -e '.[peers]'
    python benchmarks/cpu_vs_faster_whisper.py --workload folder --rounds 3
    python benchmarks/cpu_vs_faster_whisper.py --workload long --rounds 3 --beam 5
    python benchmarks/cpu_vs_faster_whisper.py --workload long --engines whisperctl,transformers,faster-whisper,openai-whisper
    python benchmarks/cpu_vs_faster_whisper.py --workload folder --emulate-avx2   # AVX2 kernels for every engine
    python benchmarks/cpu_vs_faster_whisper.py --workload s1 --wc-extra '--chunking vad' --fw-vad   # VAD on both

``--rounds`` is bench's ``--repeats``; ``--warmup`` defaults to 0, so "RTFx w/ load" is the whole process's cold
figure, as this script measured before it called bench. ``--emulate-avx2`` runs every engine with AVX2 kernels on
an AVX-512 CPU: ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's float kernels), ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` (its
int8 GEMMs) and ``CT2_FORCE_CPU_ISA=AVX2`` (CTranslate2). Any other bench flag goes after ``--``.

Flags of the earlier, self-timing version (docs/benchmarks.md's older commands): ``--fw-compute float32`` is now
``--wc-quantize none`` (faster-whisper's compute type follows whisperctl's quantization); ``--baseline-extra`` is
gone (two whisperctl configurations: bench's matrix, or two runs and ``--compare-to``). Figures measured since this
script calls bench give faster-whisper bench's 16 kHz samples instead of its own PyAV decoding of the file, which
moves its WER by a few words (LJ 231 s, greedy int8, one check: 3.35 % decoding the file itself, 3.53 % on bench's
samples).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
LJ = "TTS/LJ001-0001_to_0032_concat.wav"
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "CT2_FORCE_CPU_ISA": "AVX2"}


def manifest() -> list[dict]:
    path = SPEECH / "MANIFEST.tsv"
    if not path.is_file():
        sys.exit(f"{path} not found: the workloads need ../shared/speech")
    return list(csv.DictReader(path.open(encoding="utf-8"), delimiter="\t"))


def workload(name: str, minutes: float, scratch: Path) -> tuple[list[Path], list[str]]:
    """(audio files, their reference texts) of a workload."""
    rows = manifest()
    if name == "folder":
        chosen = [r for r in rows if r["file"] != LJ]
        return [SPEECH / r["file"] for r in chosen], [r["reference_text"] for r in chosen]
    if name in ("s1", "s2", "s3"):
        return vad_workload(name, rows, scratch)
    lj = next(r for r in rows if r["file"] == LJ)
    if name == "long":
        return [SPEECH / LJ], [lj["reference_text"]]
    import numpy as np
    import soundfile as sf

    data, sr = sf.read(str(SPEECH / LJ), dtype="float32")
    tiles = max(1, round(minutes * 60 / (len(data) / sr)))
    path = scratch / f"lj-x{tiles}.flac"
    if not path.exists():
        sf.write(str(path), np.tile(data, tiles), sr)
    return [path], [" ".join([lj["reference_text"]] * tiles)]


def vad_workload(name: str, rows: list[dict], scratch: Path) -> tuple[list[Path], list[str]]:
    """The VAD workloads, built once into ``scratch`` at 16 kHz (see the module docstring)."""
    import librosa
    import numpy as np
    import soundfile as sf

    sr = 16_000
    rng = np.random.default_rng(13)
    if name == "s3":
        n = 60 * sr
        t = np.arange(n) / sr
        noise = _white_pink(rng, n, pink=False) * 0.5 + _white_pink(rng, n, pink=True) * 0.5
        notes = 220.0 * 2 ** (rng.integers(0, 24, size=120) / 12)  # a new chord every 0.5 s
        tones = np.zeros(n)
        for i, f0 in enumerate(notes):
            seg = slice(i * sr // 2, (i + 1) * sr // 2)
            env = np.exp(-3 * (t[seg] - t[seg][0]))
            tones[seg] = env * sum(np.sin(2 * np.pi * f0 * k * t[seg]) / k for k in (1, 1.25, 1.5, 2))
        out = []
        for label, data in (("noise", noise), ("tones", tones), ("silence", np.zeros(n))):
            path = scratch / f"s3-{label}.flac"
            if not path.exists():
                peak = np.abs(data).max() or 1.0
                sf.write(str(path), (0.3 * data / peak).astype(np.float32), sr)
            out.append(path)
        return out, ["", "", ""]
    clips = [r for r in rows if r["file"].startswith("TTS/LJ001-00") and "concat" not in r["file"]]
    gaps = (np.random.default_rng(13).uniform(2.0, 60.0, size=len(clips) + 1) * sr).astype(int)  # same in s1 and s2
    path = scratch / f"{name}.flac"
    if not path.exists() or not path.with_suffix(".spans.json").exists():
        parts, spans, at = [], [], 0
        for i, r in enumerate(clips):
            data, rate = sf.read(str(SPEECH / r["file"]), dtype="float32")
            speech = librosa.resample(data, orig_sr=rate, target_sr=sr) if rate != sr else data
            rms = float(np.sqrt(np.mean(speech ** 2)))
            gap = int(gaps[i])
            filler = np.zeros(gap, np.float32)
            if name == "s2":
                noise = _white_pink(rng, gap, pink=bool(i % 2))
                filler = (noise / np.sqrt(np.mean(noise ** 2)) * rms * 10 ** (-20 / 20)).astype(np.float32)
            parts += [filler, speech]
            spans.append([(at + gap) / sr, (at + gap + len(speech)) / sr])
            at += gap + len(speech)
        parts.append(np.zeros(int(gaps[-1]), np.float32))
        sf.write(str(path), np.concatenate(parts), sr)
        path.with_suffix(".spans.json").write_text(json.dumps(spans))  # where each clip lies, seconds
    return [path], [" ".join(r["reference_text"] for r in clips)]


def _white_pink(rng, n: int, pink: bool):
    import numpy as np

    white = rng.standard_normal(n)
    if not pink:
        return white
    spectrum = np.fft.rfft(white)
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))  # 1/f power
    return np.fft.irfft(spectrum, n)


def cpu_description() -> str:
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", "unknown CPU", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    present = [f for f in ISA_FLAGS if f in flags]
    return f"{model}, {os.cpu_count()} logical CPUs; ISA: {' '.join(present) or 'unknown'}"


def timed(cmd: list[str], env: dict) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS in MiB, stdout, stderr) of one whole process (benchmarks/ray_overhead.py)."""
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read().decode(errors="replace"), se.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd[:6])} … failed ({proc.returncode}):\n{stderr[-3000:]}")
    return wall, usage.ru_maxrss // 1024, stdout, stderr


# ------------------------------------------------------------------------------------------------ the command
def prepare(name: str, minutes: float, scratch: Path) -> list[str]:
    """``whisperctl bench`` input flags for a workload, its files' references written beside them."""
    if name == "folder":
        return ["--manifest", str(SPEECH / "MANIFEST.tsv")]  # bench leaves out the concatenation
    files, references = workload(name, minutes, scratch)
    folder = scratch / f"inputs-{name}"
    folder.mkdir(exist_ok=True)
    flags = []
    for f, ref in zip(files, references):
        link = folder / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
        link.with_suffix(".txt").write_text(ref + "\n", encoding="utf-8")
        flags += ["--audio", str(link)]
    return flags


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["folder", "long", "tiled", "s1", "s2", "s3"], default="long")
    p.add_argument("--engines", default="whisperctl,faster-whisper")
    p.add_argument("--only", choices=["wc", "fw"], help="one system: --engines whisperctl or faster-whisper")
    p.add_argument("--tiled-minutes", type=float, default=58.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", choices=["tiny.en", "base-pypi"], default="tiny.en",
                   help="base-pypi: the multilingual base (extra whisperctl[base]); every engine told language en")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--wc-quantize", default="auto", help="--quantize: int8 (auto on the CPU) is also faster-whisper's compute type")
    p.add_argument("--wc-batch", type=int, default=0, help="--batch-size (0: each engine's default)")
    p.add_argument("--wc-chunking", default="batched")
    p.add_argument("--wc-extra", type=shlex.split, default=[], help="more whisperctl flags, one string: '--attn eager'")
    p.add_argument("--fw-vad", action="store_true", help="--vad silero: the VAD on for every engine that has one")
    p.add_argument("--emulate-avx2", action="store_true")
    p.add_argument("--json", type=Path, help="bench's --json")
    p.add_argument("bench_args", nargs="*", help="after --: more whisperctl bench flags")
    args = p.parse_args()

    scratch = Path(tempfile.gettempdir()) / "whisperctl-bench"
    scratch.mkdir(exist_ok=True)
    engines = {"wc": "whisperctl", "fw": "faster-whisper"}[args.only] if args.only else args.engines
    cmd = [sys.executable, "-c", "from whisperctl.cli import main; main()", "bench", "--engines", engines, *prepare(args.workload, args.tiled_minutes, scratch),
           "--repeats", str(args.rounds), "--warmup", str(args.warmup), "--threads", str(args.threads),
           "--beam-size", str(args.beam), "--quantize", args.wc_quantize, "--chunking", args.wc_chunking, "--model", args.model]
    if args.model != "tiny.en":
        cmd += ["--language", "en"]  # English workloads, no detection on any side
    if args.wc_batch:
        cmd += ["--batch-size", str(args.wc_batch)]
    if args.fw_vad:
        cmd += ["--vad", "silero"]
    cmd += args.wc_extra + args.bench_args
    json_out = args.json or scratch / f"engines-{args.workload}.json"
    cmd += ["--json", str(json_out)]
    print(f"CPU: {cpu_description()}")
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = dict(os.environ, **(AVX2_ENV if args.emulate_avx2 else {}))
    code = subprocess.call(cmd, env=env, cwd=ROOT)
    if code == 0 and args.workload == "s3":  # no speech at all, so no WER: count what was invented
        for row in json.loads(json_out.read_text())["rows"]:
            words = sum(len(t.split()) for t in row.get("texts", []))
            print(f"{row['engine']}: words transcribed {words} (target 0)")
    sys.exit(code)


if __name__ == "__main__":
    main()
