"""Real weights on CUDA: every dtype × attention that can run, WER on JFK and LJ 231 s against the fp32 CPU run.

    python benchmarks/gpu_real_weights.py MODEL SPEECH_DIR OUT_DIR [--device cuda]

SPEECH_DIR holds jfk.flac, lj231.flac and references.tsv (benchmarks/gpu_assets.py builds it). Writes
OUT_DIR/real_weights.json (every transcript) and OUT_DIR/real_weights.md (the table). Rows that cannot run on
this machine are listed with the eligibility module's reason.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

ATTENTIONS = ["eager", "sdpa", "sdpa:flash", "sdpa:efficient", "sdpa:math", "sdpa:cudnn", "flex_attention", "flash_attention_2"]


def main(model: str, speech: Path, out: Path, device: str = "cuda") -> None:
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.config import Attention, DType, parse_choice
    from whisperctl.eligibility import attention_verdict, environment_summary, probe, resolve_device
    from whisperctl.wer import wer

    with (speech / "references.tsv").open() as fh:
        refs = {r["file"]: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}
    files = ["jfk.flac", "lj231.flac"]
    env = probe()
    rows = []

    def run(label_device: str, dtype: str, attention: str, quantization: str = "none") -> dict:
        t = Transcriber(EngineConfig(model=model, device=label_device, dtype=dtype, attention=attention,
                                     quantization=quantization, batch_size=8))
        t.load()
        row = {"device": label_device, "dtype": dtype, "attention": attention, "texts": {}, "wer": {}, "decode_s": {}}
        for f in files:
            started = time.perf_counter()
            result = t.transcribe(str(speech / f))
            row["decode_s"][f] = round(time.perf_counter() - started, 3)
            row["texts"][f] = result.text
            row["wer"][f] = round(wer([refs[f]], [result.text]), 4)
        row["attention_in_effect"] = t.runtime_info()["attention"]
        del t
        return row

    baseline = run("cpu", "fp32", "sdpa")
    baseline["label"] = "cpu fp32 sdpa (reference)"
    rows.append(baseline)
    gpu = resolve_device(device, env)
    for dtype in ("fp16", "bf16"):
        for attention in ATTENTIONS:
            verdict = attention_verdict(parse_choice(Attention, attention, "--attn"), gpu, parse_choice(DType, dtype, "--dtype"), env)
            if not verdict.usable:
                rows.append({"device": gpu, "dtype": dtype, "attention": attention, "skipped": verdict.reason})
                continue
            try:
                row = run(gpu, dtype, attention)
            except Exception as exc:  # noqa: BLE001 - a failing kernel is a result to report, not the end of the run
                rows.append({"device": gpu, "dtype": dtype, "attention": attention, "error": f"{type(exc).__name__}: {exc}"[:300]})
                continue
            row["vs_reference_wer"] = {f: round(wer([baseline["texts"][f]], [row["texts"][f]]), 4) for f in files}
            rows.append(row)
            print(dtype, attention, row["wer"], row["vs_reference_wer"], flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_weights.json").write_text(json.dumps({"model": model, "env": environment_summary(env), "rows": rows}, indent=1, default=str))
    lines = ["| device | dtype | attention | WER JFK | WER LJ 231 s | Δ words vs CPU fp32 (JFK / LJ) | decode s (JFK / LJ) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['device']} | {r['dtype']} | {r['attention']} | – | – | {r.get('skipped') or r.get('error')} | – |")
            continue
        vs = r.get("vs_reference_wer", {})
        lines.append(f"| {r['device']} | {r['dtype']} | {r['attention']} | {100 * r['wer']['jfk.flac']:.1f} % | "
                     f"{100 * r['wer']['lj231.flac']:.2f} % | "
                     f"{' / '.join(f'{100 * vs[f]:.1f} %' for f in files) if vs else 'reference'} | "
                     f"{r['decode_s']['jfk.flac']:.2f} / {r['decode_s']['lj231.flac']:.2f} |")
    (out / "real_weights.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    args = sys.argv[1:]
    device = "cuda"
    if "--device" in args:
        i = args.index("--device")
        device = args[i + 1]
        del args[i:i + 2]
    main(args[0], Path(args[1]), Path(args[2]), device)
