"""whisperctl vs faster-whisper on the CPU: same weights, same threads, alternating whole processes, three workloads.

Workloads (``--workload``):
  folder  W1: every clip of ../shared/speech/MANIFEST.tsv except the 231 s concatenation, in one call
  long    W2: the LJ Speech 231 s file
  tiled   W3: the LJ file tiled to ``--tiled-minutes`` (default 58 min), written once to a temporary folder
  s1      the 32 LJ clips joined by digital silences of 2-60 s (uniform, seed 13): about 80 % silence
  s2      s1 with white or pink noise (alternating) in the gaps, 20 dB below the speech's RMS
  s3      three files of no speech: 60 s of noise, 60 s of music-like tones, 60 s of digital silence
          (WER is undefined: the words transcribed are counted instead; the target is none)

Each measurement is one whole process, timed from spawn to exit (imports, model load and decoding included):
whisperctl is its CLI (``whisperctl transcribe FILES -o DIR -f json -q`` with the flags below); faster-whisper is
a Python process that loads the very CTranslate2 directory whisperctl's model comes from (``--model``: tiny.en or base-pypi) and transcribes the
same files one after the other (no VAD, ``language="en"``, ``cpu_threads`` = ``--threads``). The two alternate
A B A B …; the ratio faster-whisper wall / whisperctl wall is taken pair by pair and the median reported, with
each system's WER (jiwer after Whisper's English normaliser, corpus WER over the workload's files) and peak RSS.

    pip install -e '.[peers]'
    python benchmarks/cpu_vs_faster_whisper.py --workload folder --rounds 3
    python benchmarks/cpu_vs_faster_whisper.py --workload long --rounds 3 --beam 5
    python benchmarks/cpu_vs_faster_whisper.py --workload tiled --rounds 3
    python benchmarks/cpu_vs_faster_whisper.py --workload folder --emulate-avx2   # AVX2 kernels for both
    python benchmarks/cpu_vs_faster_whisper.py --workload s1 --wc-extra '--chunking vad' --fw-vad   # VAD on both
    python benchmarks/cpu_vs_faster_whisper.py --workload s1 --wc-extra '--chunking vad' --baseline-extra '--vad none'
                                            # whisperctl with VAD against whisperctl without (no faster-whisper)

``--emulate-avx2`` runs both systems with AVX2 kernels on an AVX-512 CPU: ``ATEN_CPU_CAPABILITY=avx2`` (PyTorch's
float kernels) and ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2`` (its int8 GEMMs) for whisperctl, ``CT2_FORCE_CPU_ISA=AVX2``
for faster-whisper. Prints the CPU model and ISA flags, threads and versions with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import statistics
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


# ------------------------------------------------------------------------------------------------ children
def child_faster_whisper(args: argparse.Namespace) -> None:
    import faster_whisper
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir(args.model)), device="cpu", compute_type=args.fw_compute, cpu_threads=args.threads,
                         num_workers=1)
    texts = []
    for f in args.files:
        segments, _ = model.transcribe(f, beam_size=args.beam, vad_filter=args.fw_vad, language="en")
        texts.append("".join(s.text for s in segments))  # segments is a generator: decoding happens here
    print("RESULT " + json.dumps({"texts": texts, "version": faster_whisper.__version__,
                                  "system": f"faster-whisper {faster_whisper.__version__} {args.fw_compute} beam {args.beam}"
                                            + (" vad_filter" if args.fw_vad else "")}))


def ct2_dir(name: str) -> Path:
    """The CTranslate2 directory whisperctl's model ``name`` is converted from: faster-whisper loads the same one."""
    from whisperctl import models

    return Path(models.ct2_source(models.resolve(name))[0])  # a packaged model not installed: its pip command


def whisperctl_command(args: argparse.Namespace, out: Path, extra: list[str] | None = None) -> list[str]:
    cli = Path(sys.executable).with_name("whisperctl")
    cmd = [str(cli) if cli.exists() else "whisperctl", "transcribe", *map(str, args.files), "-o", str(out), "-f", "json", "-q",
           "--overwrite", "--threads", str(args.threads), "--beam-size", str(args.beam), "--quantize", args.wc_quantize,
           "--chunking", args.wc_chunking, "--model", args.model]
    if args.model != "tiny.en":
        cmd += ["--language", "en"]  # as faster-whisper is told: English workloads, no detection on either side
    if args.wc_batch:
        cmd += ["--batch-size", str(args.wc_batch)]
    return cmd + (args.wc_extra if extra is None else extra)


def whisperctl_texts(files: list[Path], out: Path) -> tuple[list[str], dict]:
    texts, runtime = [], {}
    for f in files:
        data = json.loads((out / f"{f.stem}.json").read_text(encoding="utf-8"))
        texts.append(data["text"])
        runtime = data.get("runtime", runtime)
    return texts, runtime


def timed(cmd: list[str], env: dict) -> tuple[float, int, str, str]:
    """(wall seconds, peak RSS in MiB, stdout, stderr) of one whole process."""
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workload", choices=["folder", "long", "tiled", "s1", "s2", "s3"], default="long")
    p.add_argument("--tiled-minutes", type=float, default=58.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", choices=["tiny.en", "base-pypi"], default="tiny.en",
                   help="base-pypi: the multilingual base (extra whisperctl[base]); both systems told language en")
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--fw-compute", default="int8")
    p.add_argument("--wc-quantize", default="auto")
    p.add_argument("--wc-batch", type=int, default=0, help="0: whisperctl's default")
    p.add_argument("--wc-chunking", default="batched")
    p.add_argument("--wc-extra", type=shlex.split, default=[], help="more whisperctl flags, one string: '--attn eager'")
    p.add_argument("--fw-vad", action="store_true", help="faster-whisper with vad_filter=True (its defaults)")
    p.add_argument("--baseline-extra", type=shlex.split,
                   help="compare with whisperctl run with these flags (one string), not with faster-whisper")
    p.add_argument("--emulate-avx2", action="store_true")
    p.add_argument("--only", choices=["wc", "fw"], help="run one system (no ratio)")
    p.add_argument("--json", type=Path, help="save every run here")
    p.add_argument("--child", choices=["fw"], help=argparse.SUPPRESS)
    p.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child_faster_whisper(args)
        return

    from whisperctl.wer import wer

    env = dict(os.environ, **(AVX2_ENV if args.emulate_avx2 else {}))
    scratch = Path(tempfile.gettempdir()) / "whisperctl-bench"
    scratch.mkdir(exist_ok=True)
    files, references = workload(args.workload, args.tiled_minutes, scratch)
    args.files = files
    fw_cmd = [sys.executable, __file__, "--child", "fw", "--model", args.model, "--threads", str(args.threads), "--beam", str(args.beam),
              "--fw-compute", args.fw_compute, *(["--fw-vad"] if args.fw_vad else []), "--files", *map(str, files)]
    duration = 0.0
    import soundfile as sf

    for f in files:
        duration += sf.info(str(f)).duration
    print(f"CPU: {cpu_description()}")
    print(f"workload {args.workload}: {len(files)} file(s), {duration:.1f} s of audio; threads {args.threads}; "
          f"beam {args.beam}; model {args.model}; {'AVX2 emulated: ' + ' '.join(f'{k}={v}' for k, v in AVX2_ENV.items()) if args.emulate_avx2 else 'default kernels'}")
    runs: dict[str, list[dict]] = {"wc": [], "fw": []}
    systems = [args.only] if args.only else ["wc", "fw"]
    for r in range(args.rounds):
        for system in systems:
            if system == "wc" or args.baseline_extra is not None:
                extra = args.wc_extra if system == "wc" else args.baseline_extra
                with tempfile.TemporaryDirectory(dir=scratch) as out:
                    wall, rss, _, _ = timed(whisperctl_command(args, Path(out), extra), env)
                    texts, runtime = whisperctl_texts(files, Path(out))
                versions = runtime.get("versions", {})
                label = (f"whisperctl {versions.get('whisperctl', '?')} {runtime.get('quantization')} "
                         f"{runtime.get('attention')} {args.wc_chunking} decoder {runtime.get('decoder')} beam {args.beam} "
                         f"{' '.join(extra)} (torch {versions.get('torch')}, {runtime.get('threads')} threads)")
            else:
                wall, rss, stdout, _ = timed(fw_cmd, env)
                result = json.loads(next(l for l in stdout.splitlines() if l.startswith("RESULT "))[7:])
                texts, label = result["texts"], result["system"]
            if all(not ref for ref in references):  # s3: no speech at all, so no WER: count what was invented
                score = float(sum(len(t.split()) for t in texts))
                bad = [(f.name, t.strip()[:80]) for f, t in zip(files, texts) if t.strip()]
                scored = f"words transcribed {int(score)}" + (f": {bad}" if bad else "")
            else:
                score = wer(references, texts)
                bad = [(f.name, round(100 * wer([ref], [t]))) for f, ref, t in zip(files, references, texts)
                       if len(files) > 1 and wer([ref], [t]) > 0.3]
                scored = f"WER {100 * score:.2f} %" + (f"; clips over 30 % WER: {bad}" if bad else "")
            runs[system].append({"system": label, "wall": wall, "rss_mib": rss, "wer": score, "over_30": bad})
            print(f"round {r + 1} {label}: {wall:.2f} s wall, RTFx {duration / wall:.1f}, peak RSS {rss} MiB, {scored}",
                  flush=True)
    print()
    for key in systems:
        walls = [x["wall"] for x in runs[key]]
        print(f"{runs[key][0]['system']}: wall median {statistics.median(walls):.2f} s (min {min(walls):.2f}, "
              f"max {max(walls):.2f}), peak RSS max {max(x['rss_mib'] for x in runs[key])} MiB, "
              f"WER {', '.join('%.2f' % (100 * x['wer']) for x in runs[key])} %")
    ratios = []
    if not args.only:
        ratios = [b["wall"] / a["wall"] for a, b in zip(runs["wc"], runs["fw"])]
        other = "baseline whisperctl" if args.baseline_extra is not None else "faster-whisper"
        print(f"speed ratio ({other} wall / whisperctl wall) per pair: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"median {statistics.median(ratios):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_description(), "workload": args.workload, "audio_s": duration,
                                         "avx2_emulated": args.emulate_avx2, "runs": runs, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
