"""WER of whisperctl's decoding modes and faster-whisper's, per workload and per long recording (no timing).

Workloads (../shared/speech, bundled tiny.en for both systems, faster-whisper on the same CTranslate2 directory):
  W1  every clip of MANIFEST.tsv except the 231 s concatenation, as one corpus (corpus WER)
  W2  the LJ 231 s concatenation
  W4  every recording over 20 s, each on its own (LJ 231 s, the 52 s sonnet, the 25 s spontaneous recording)

Each whisperctl mode runs through the library on one loaded model (``--mode NAME=FLAGS``, flags as
``key=value`` pairs of DecodeOptions, e.g. ``batched=chunking=batched``); faster-whisper runs its sequential
``transcribe`` (beam as given, int8 unless ``--precision fp32``, no VAD, English). Prints one table row per
(workload or file, system) with the WER and, per file, the clips where a system is more than 5 points worse
than faster-whisper.

    python benchmarks/accuracy.py                                  # default, batched and sequential w/o VAD
    python benchmarks/accuracy.py --multilingual                   # base-pypi on ../shared/speech-multilingual
    python benchmarks/accuracy.py --beam 5 --mode default=
    python benchmarks/accuracy.py --degrade 5 --mode default= --mode best1=best_of=1   # phone band, noisy
    python benchmarks/accuracy.py --conditions clean,phone,phone-snr20,phone-snr10,quiet,two-speakers,two-channels
    ATEN_CPU_CAPABILITY=avx2 python benchmarks/accuracy.py         # the same on AVX2 kernels
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # benchmarks/degrade.py
ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
MULTILINGUAL = ROOT.parent / "shared" / "speech-multilingual"
LJ = "TTS/LJ001-0001_to_0032_concat.wav"
DEFAULT_MODES = ["default=", "batched=chunking=batched", "sequential-novad=vad=none"]


def parse_mode(text: str) -> tuple[str, dict]:
    name, _, flags = text.partition("=")
    options = {}
    for pair in filter(None, flags.split(",")):
        key, _, value = pair.partition("=")
        options[key] = int(value) if value.isdigit() else value
    return name, options


def cpu_line() -> str:
    flags = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model}; ISA {' '.join(isa) or '?'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", action="append", help="NAME=key=value,… (repeatable); default: " + " ".join(DEFAULT_MODES))
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true", help="skip faster-whisper")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--degrade", type=float, metavar="SNR_DB",
                    help="phone-band every file first (300-3400 Hz, 8 kHz) and add white noise this many dB below "
                         "the speech (seeded): audio on which windows fail the thresholds and fall back")
    ap.add_argument("--conditions", help="comma list of benchmarks/degrade.py conditions (clean, phone, phone-snr20, "
                    "phone-snr10, quiet, two-speakers, two-channels): every workload under each; the paired ones "
                    "put each recording over 20 s before the next one")
    ap.add_argument("--multilingual", action="store_true",
                    help="the multilingual base-pypi model on ../shared/speech-multilingual, each file alone, its "
                         "language given to both systems (WER on transformers' basic normaliser)")
    args = ap.parse_args()
    if args.multilingual:
        multilingual(args)
        return
    if args.conditions:
        conditions(args)
        return

    import soundfile as sf

    from whisperctl import EngineConfig, Transcriber
    from whisperctl.wer import wer

    rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    refs = {r["file"]: r["reference_text"] for r in rows}
    folder = [f for f in refs if f != LJ]
    long_files = [f for f in refs if sf.info(str(SPEECH / f)).duration > 20]
    files = sorted(set(folder) | set(long_files))
    texts: dict[str, dict[str, str]] = {}
    paths = degraded(files, args.degrade) if args.degrade is not None else {f: SPEECH / f for f in files}

    quant = "none" if args.precision == "fp32" else "int8"
    t = Transcriber(EngineConfig(quantization=quant, threads=args.threads, beam_size=args.beam)).load()
    for mode in args.mode or DEFAULT_MODES:
        name, options = parse_mode(mode)
        opts = t.options.replace(**options)
        texts[name] = {f: t.transcribe(str(paths[f]), opts).text for f in files}
        print(f"done: {name}", file=sys.stderr, flush=True)
    if not args.no_peer:
        texts["faster-whisper"] = faster_whisper_texts("tiny.en", args, {f: (paths[f], "en") for f in files})

    degrade = f", phone band + noise at {args.degrade:g} dB SNR" if args.degrade is not None else ""
    print(f"# tiny.en {args.precision}, beam {args.beam}, {args.threads} threads{degrade}; {cpu_line()}")
    print("| workload | " + " | ".join(texts) + " |")
    print("|---|" + "---|" * len(texts))

    def row(label: str, chosen: list[str]) -> None:
        cells = [f"{100 * wer([refs[f] for f in chosen], [texts[s][f] for f in chosen]):.2f} %" for s in texts]
        print(f"| {label} | " + " | ".join(cells) + " |")

    row(f"W1 folder ({len(folder)} clips)", folder)
    row("W2 LJ 231 s", [LJ])
    for f in long_files:
        row(f"W4 {f}", [f])
    if "faster-whisper" in texts:
        for s in texts:
            worse = [(f, 100 * (wer([refs[f]], [texts[s][f]]) - wer([refs[f]], [texts["faster-whisper"][f]]))) for f in files]
            worse = [(f, round(d, 1)) for f, d in worse if d > 5]
            if worse:
                print(f"{s}: more than 5 points worse than faster-whisper on {worse}")
    if args.json:
        args.json.write_text(json.dumps(texts, indent=1))


def conditions(args: argparse.Namespace) -> None:
    """Every workload under each condition of benchmarks/degrade.py, every mode and faster-whisper on each."""
    import soundfile as sf

    import degrade
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.wer import wer

    rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    refs = {r["file"]: r["reference_text"] for r in rows}
    folder = [f for f in refs if f != LJ]
    long_files = [f for f in refs if sf.info(str(SPEECH / f)).duration > 20]
    quant = "none" if args.precision == "fp32" else "int8"
    t = Transcriber(EngineConfig(quantization=quant, threads=args.threads, beam_size=args.beam)).load()
    modes = [parse_mode(m) for m in (args.mode or ["default=", "vad-none=vad=none", "vad-silero=vad=silero"])]
    systems = [name for name, _ in modes] + ([] if args.no_peer else ["faster-whisper", "fw-vad_filter"])
    print(f"# tiny.en {args.precision}, beam {args.beam}, {args.threads} threads; {cpu_line()}")
    print("| condition | workload | " + " | ".join(systems) + " |")
    print("|---|---|" + "---|" * len(systems), flush=True)
    table: dict = {}
    for condition in args.conditions.split(","):
        if condition in degrade.PAIRED:
            jobs = {f"{a} + {b}": (degrade.make(condition, SPEECH / a, SPEECH / b), f"{refs[a]} {refs[b]}")
                    for a, b in zip(long_files, long_files[1:] + long_files[:1])}
            groups = [(k, [k]) for k in jobs]
        else:
            jobs = {f: (degrade.make(condition, SPEECH / f), refs[f]) for f in sorted(set(folder) | set(long_files))}
            groups = [(f"W1 folder ({len(folder)} clips)", folder), ("W2 LJ 231 s", [LJ])]
            groups += [(f"W4 {f}", [f]) for f in long_files if f != LJ]
        texts: dict[str, dict[str, str]] = {}
        for name, options in modes:
            opts = t.options.replace(**options)
            texts[name] = {k: t.transcribe(str(path), opts).text for k, (path, _) in jobs.items()}
        if not args.no_peer:
            files = {k: (path, "en") for k, (path, _) in jobs.items()}
            texts["faster-whisper"] = faster_whisper_texts("tiny.en", args, files)
            texts["fw-vad_filter"] = faster_whisper_texts("tiny.en", args, files, vad_filter=True)
        for label, keys in groups:
            cells = [100 * wer([jobs[k][1] for k in keys], [texts[s][k] for k in keys]) for s in systems]
            table[f"{condition} | {label}"] = dict(zip(systems, cells))
            print(f"| {condition} | {label} | " + " | ".join(f"{c:.2f} %" for c in cells) + " |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(table, indent=1))


def degraded(files: list[str], snr_db: float) -> dict[str, Path]:
    """Each file as a phone line would carry it (band-passed to 300-3400 Hz, through 8 kHz) with white noise
    ``snr_db`` below its RMS (seeded by the file's name), written once as 16 kHz WAV to a temporary folder."""
    import tempfile

    import soundfile as sf

    import degrade
    from whisperctl import audio

    out = Path(tempfile.mkdtemp(prefix="whisperctl-degraded-"))
    paths = {}
    for f in files:
        x = degrade.with_noise(degrade.phone_band(audio.load(str(SPEECH / f))), snr_db, seed=f)
        paths[f] = out / (f.replace("/", "__") + ".wav")
        sf.write(paths[f], x, 16000)
    return paths


def faster_whisper_texts(model: str, args: argparse.Namespace, files: dict[str, tuple[Path, str]],
                         vad_filter: bool = False) -> dict[str, str]:
    """faster-whisper's sequential ``transcribe`` of each (path, language) on ``model``'s CTranslate2 weights (the
    ones whisperctl converts), no VAD, beam and precision from ``args``."""
    from faster_whisper import WhisperModel

    from whisperctl import models

    ct2 = models.ct2_source(models.resolve(model))[0]
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32" if args.precision == "fp32" else "int8",
                      cpu_threads=args.threads)
    out = {}
    for name, (path, language) in files.items():
        segments, _ = fw.transcribe(str(path), language=language, beam_size=args.beam, vad_filter=vad_filter)
        out[name] = "".join(s.text for s in segments)
    return out


def multilingual(args: argparse.Namespace) -> None:
    import jiwer
    from transformers.models.whisper.english_normalizer import BasicTextNormalizer

    from whisperctl import EngineConfig, Transcriber

    norm = BasicTextNormalizer()
    rows = list(csv.DictReader((MULTILINGUAL / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    quant = "none" if args.precision == "fp32" else "int8"
    t = Transcriber(EngineConfig(model="base-pypi", quantization=quant, threads=args.threads, beam_size=args.beam)).load()
    texts: dict[str, dict[str, str]] = {}
    for mode in args.mode or DEFAULT_MODES:
        name, options = parse_mode(mode)
        texts[name] = {r["file"]: t.transcribe(str(MULTILINGUAL / r["file"]), t.options.replace(language=r["language"], **options)).text
                       for r in rows}
    if not args.no_peer:
        texts["faster-whisper"] = faster_whisper_texts(
            "base-pypi", args, {r["file"]: (MULTILINGUAL / r["file"], r["language"]) for r in rows})
    print(f"# base-pypi {args.precision}, beam {args.beam}, {args.threads} threads; {cpu_line()}")
    print("| file | " + " | ".join(texts) + " |")
    print("|---|" + "---|" * len(texts))
    for r in rows:
        cells = [f"{100 * jiwer.wer(norm(r['reference_text']), norm(texts[s][r['file']])):.2f} %" for s in texts]
        print(f"| {r['file']} ({r['language']}) | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(texts, indent=1))


if __name__ == "__main__":
    main()
