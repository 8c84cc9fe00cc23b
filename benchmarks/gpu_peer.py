"""whisperctl against the transformers ASR pipeline as insanely-fast-whisper runs it, same weights, same GPU:
a thin caller of ``whisperctl bench --engines`` (method: docs/bench.md).

    python benchmarks/gpu_peer.py [real] MODEL AUDIO REFERENCE_TSV OUT_DIR [--minutes 30] [--engines transformers,whisperctl]

MODEL is any ``--model`` (tiny.en, a CTranslate2 or transformers directory). AUDIO is tiled to ``--minutes`` into
OUT_DIR, its reference (the row of REFERENCE_TSV whose ``file`` is AUDIO's name) repeated beside it, so WER is
scored. Every engine runs fp16 with sdpa at batch 24 (insanely-fast-whisper's defaults: the pipeline with
chunk_length_s=30), one process per engine and repeat, alternating, one warm-up window each, 3 repeats; results
go to OUT_DIR/peer_real.json and .md. Add ``--dtype bf16`` (after ``--``) for whisperctl in bf16; the pipeline then
runs bf16 too.

The former ``random`` mode (random large-v3 weights saved once, every window forced to N tokens) is gone: engines
other than whisperctl cannot force a token count, so a fixed-work speed comparison is whisperctl's own matrix,
``whisperctl bench --weights random --decode-tokens N``.
"""

from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model")
    p.add_argument("audio", type=Path)
    p.add_argument("references", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--engines", default="transformers,whisperctl")
    p.add_argument("--device", default="cuda:0")
    p.add_argument("bench_args", nargs="*", help="after --: more whisperctl bench flags")
    argv = sys.argv[1:]
    args = p.parse_args(argv[1:] if argv[:1] == ["real"] else argv)  # "real": the former mode's name

    import numpy as np
    import soundfile as sf

    from whisperctl import audio as audio_mod

    with args.references.open(encoding="utf-8") as fh:
        reference = {Path(r["file"]).name: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}[args.audio.name]
    samples = audio_mod.load(args.audio)  # 16 kHz mono float32
    reps = max(1, int(np.ceil(args.minutes * 60 * audio_mod.SAMPLE_RATE / len(samples))))
    args.out.mkdir(parents=True, exist_ok=True)
    tiled = args.out / f"{args.audio.stem}-x{reps}.flac"
    if not tiled.exists():
        sf.write(str(tiled), np.tile(samples, reps), audio_mod.SAMPLE_RATE)
    tiled.with_suffix(".txt").write_text(" ".join([reference] * reps) + "\n", encoding="utf-8")
    cmd = [sys.executable, "-c", "from whisperctl.cli import main; main()", "bench", "--engines", args.engines, "--model", args.model,
           "--audio", str(tiled), "--device", args.device, "--dtype", "fp16", "--attn", "sdpa", "--batch-size", "24",
           "--repeats", "3", "--warmup", "1", "--json", str(args.out / "peer_real.json"),
           "--markdown", str(args.out / "peer_real.md"), *args.bench_args]
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    sys.exit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
