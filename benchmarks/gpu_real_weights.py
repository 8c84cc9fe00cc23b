"""Real weights on the GPU: every dtype × attention that can run here, in the default pipeline (batched, VAD on)
and with ``--chunking sequential``, on JFK and LJ 231 s; WER against the references and against the CPU run of
the same weights (fp32, no quantization) in the same mode.

    python benchmarks/gpu_real_weights.py MODEL SPEECH_DIR OUT_DIR [--device cuda] [--dtypes fp16,bf16]
        [--attentions sdpa,...] [--files jfk.flac,lj231.flac] [--notes DIR]

SPEECH_DIR holds the files and references.tsv (benchmarks/gpu_assets.py builds it). Rows run in order of value
(sdpa in both modes, fp16 before bf16; then the other kernels, default mode first; flex_attention, which
compiles, last) while the previous row's
duration still fits before ``STEP_DEADLINE``; OUT_DIR/real_weights.json is rewritten after each row; the table
goes to NOTES_DIR/30-real-weights.md for the summary. Rows that cannot run here carry the eligibility module's
reason; a kernel that fails is a row with its error.
"""

from __future__ import annotations

import csv
import sys
import time
from pathlib import Path
from typing import Any

from gpu_report import Deadline, pop_option as _option, write_json

ATTENTIONS = ["sdpa", "sdpa:flash", "sdpa:efficient", "sdpa:cudnn", "sdpa:math", "eager", "flex_attention", "flash_attention_2"]
MODES = {"default": {}, "sequential": {"chunking": "sequential"}}  # per-call options over the config's defaults
#: A GPU run may differ from the CPU run of the same weights by rounding, not by meaning.
MAX_WER_VS_CPU = 0.05


def main(model: str, speech: Path, out: Path, device: str, dtypes: list[str], attentions: list[str],
         files: list[str], notes: Path | None) -> None:
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.config import Attention, DType, parse_choice
    from whisperctl.eligibility import attention_verdict, environment_summary, probe, resolve_device
    from whisperctl.wer import wer

    with (speech / "references.tsv").open() as fh:
        refs = {r["file"]: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}
    env = probe()
    deadline = Deadline()
    loaded: dict[tuple[str, str, str], Any] = {}
    payload: dict[str, Any] = {"model": model, "files": files, "max_wer_vs_cpu": MAX_WER_VS_CPU,
                               "env": environment_summary(env), "reference": {}, "rows": [], "not_run": []}

    def transcriber(dev: str, dtype: str, attention: str) -> Any:
        key = (dev, dtype, attention)
        if key not in loaded:  # one load per configuration, reused by both modes
            loaded[key] = Transcriber(EngineConfig(model=model, device=dev, dtype=dtype, attention=attention,
                                                   quantization="none", batch_size=8), env).load()
        return loaded[key]

    def run(dev: str, dtype: str, attention: str, mode: str) -> dict[str, Any]:
        t = transcriber(dev, dtype, attention)
        options = t.options.replace(**MODES[mode])
        row: dict[str, Any] = {"device": dev, "dtype": dtype, "attention": attention, "mode": mode,
                               "vad": options.vad_in_effect.value, "texts": {}, "wer": {}, "decode_s": {}}
        for f in files:
            _sync(dev)
            started = time.perf_counter()
            result = t.transcribe(str(speech / f), options)
            _sync(dev)
            row["decode_s"][f] = round(time.perf_counter() - started, 3)
            row["texts"][f] = result.text
            row["wer"][f] = round(wer([refs[f]], [result.text]), 4)
            row["attention_in_effect"] = result.runtime["attention"]
            row["dtype_in_effect"] = result.runtime["dtype"]
        return row

    def save() -> None:
        write_json(out / "real_weights.json", payload)
        if notes is not None:
            (notes / "30-real-weights.md").write_text(_markdown(payload))

    out.mkdir(parents=True, exist_ok=True)
    for mode in MODES:  # the CPU run of the same weights: what every GPU row is compared with
        payload["reference"][mode] = run("cpu", "fp32", "sdpa", mode)
        save()
        print("cpu fp32 sdpa", mode, payload["reference"][mode]["wer"], flush=True)
    gpu = resolve_device(device, env)
    plan = [(mode, dtype, attention) for mode in MODES for dtype in dtypes for attention in attentions]
    # In order of value: sdpa in both modes first, then the other kernels; flex_attention compiles on first use
    # (tens of seconds), so its rows go last, where they cannot crowd out the others.
    plan.sort(key=lambda row: (row[2] == "flex_attention", row[2] != "sdpa"))
    last_row_s = 0.0  # a row takes about as long as the one before it: start it only if that still fits
    for i, (mode, dtype, attention) in enumerate(plan):
        base = {"device": gpu, "dtype": dtype, "attention": attention, "mode": mode}
        verdict = attention_verdict(parse_choice(Attention, attention, "--attn"), gpu, parse_choice(DType, dtype, "--dtype"), env)
        if not verdict.usable:
            payload["rows"].append({**base, "skipped": verdict.reason})
            continue
        if deadline.passed(last_row_s):
            payload["not_run"] = [f"{m} {d} {a}" for m, d, a in plan[i:]]
            print(f"time budget spent: {len(plan) - i} rows not run", flush=True)
            break
        started = time.perf_counter()
        try:
            row = run(gpu, dtype, attention, mode)
        except Exception as exc:  # noqa: BLE001 - a failing kernel is a result to report, not the end of the run
            payload["rows"].append({**base, "error": f"{type(exc).__name__}: {exc}"[:300]})
            save()
            continue
        finally:
            last_row_s = time.perf_counter() - started
        reference = payload["reference"][mode]
        row["wer_vs_cpu"] = {f: round(wer([reference["texts"][f]], [row["texts"][f]]), 4) for f in files}
        row["within_bound"] = all(v <= MAX_WER_VS_CPU for v in row["wer_vs_cpu"].values())
        payload["rows"].append(row)
        save()
        print(mode, dtype, attention, row["wer"], "vs cpu", row["wer_vs_cpu"], row["decode_s"], flush=True)
    save()
    print(_markdown(payload))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _markdown(payload: dict[str, Any]) -> str:
    files = payload["files"]
    head = " / ".join(f.split(".")[0] for f in files)
    lines = [f"## Real weights ({Path(payload['model']).name}): WER vs reference, WER vs the CPU fp32 run of the same "
             f"weights, decode seconds ({head})", "",
             "| device | dtype | attention | mode | WER % | vs CPU % | decode s | note |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]

    def join(values: dict[str, float], scale: float = 100.0, fmt: str = "{:.2f}") -> str:
        return " / ".join(fmt.format(scale * values[f]) for f in files if f in values)

    rows = [{**r, "note": "reference"} for r in payload["reference"].values()] + payload["rows"]
    for r in rows:
        if "skipped" in r or "error" in r:
            lines.append(f"| {r['device']} | {r['dtype']} | {r['attention']} | {r['mode']} | – | – | – | "
                         f"{(r.get('skipped') or r.get('error')).replace('|', '/')} |")
            continue
        note = r.get("note") or ("" if r.get("within_bound") else f"DIFFERS from the CPU by more than {100 * MAX_WER_VS_CPU:.0f} %")
        lines.append(f"| {r['device']} | {r['dtype']} | {r['attention']} | {r['mode']} | {join(r['wer'])} | "
                     f"{join(r.get('wer_vs_cpu', {})) or '–'} | {join(r['decode_s'], 1.0)} | {note} |")
    if payload["not_run"]:
        lines += ["", f"Not run (time budget): {', '.join(payload['not_run'])}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    args = sys.argv[1:]
    device = _option(args, "--device", "cuda")
    dtypes = _option(args, "--dtypes", "fp16,bf16").split(",")
    attentions = _option(args, "--attentions", ",".join(ATTENTIONS)).split(",")
    files = _option(args, "--files", "jfk.flac,lj231.flac").split(",")
    notes = _option(args, "--notes", "")
    main(args[0], Path(args[1]), Path(args[2]), device, dtypes, attentions, files, Path(notes) if notes else None)
