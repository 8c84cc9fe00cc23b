"""Random-weight bench on the GPU, and a real out-of-memory, through whisperctl's bench runner.

    python benchmarks/gpu_bench.py matrix OUT_DIR [--device cuda] [--dtype fp16] [--model large-v3]
        [--attentions sdpa,...] [--batch-sizes 1,16] [--extra-models distil-large-v3,large-v3-turbo]
        [--extra-batch 16] [--duration 120] [--tokens 32] [--notes DIR]
    python benchmarks/gpu_bench.py oom OUT_DIR [--device cuda] [--model large-v3] [--batch 64] [--notes DIR]

``matrix``: one bench run per (model, attention) — each loads its model once and measures every batch size
(warm-up 1, repeats 2, a fixed number of tokens per window, VAD off: the same work for every row) — in order of
value until ``STEP_DEADLINE``; OUT_DIR/bench.json["matrix"] is rewritten after each. Latency, RTFx, tokens/s and
peak VRAM come from the runner; ``x sdpa`` is each row's RTFx over the sdpa row of the same model and batch.

``oom``: large-v3 loaded, the GPU then filled (a ballast tensor) until only the memory a batch of 8 needs is
left; a bench row at ``--batch`` must read ``OOM at batch N``, and ``transcribe`` at that batch (halve_on_oom,
its default) must halve until it fits and finish: OUT_DIR/bench.json["oom"]. Without CUDA it runs the same calls
without the ballast and says the out-of-memory itself was not exercised.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from gpu_report import Deadline, pop_option as _option, read_json, update_json

WINDOW_S = 25.0  # a batched window advances 30 s - 5 s of overlap


def matrix(out: Path, device: str, dtype: str, model: str, attentions: list[str], batches: list[int],
           extra_models: list[str], extra_batch: int, duration: float, tokens: int, notes: Path | None) -> None:
    from whisperctl import EngineConfig
    from whisperctl.bench import runner
    from whisperctl.config import Attention, DType, Quantization, parse_choice
    from whisperctl.eligibility import probe

    env = probe(check_flash_attn_import=True)
    inputs = runner.load_inputs(duration=duration)
    deadline = Deadline()
    plan = [(model, a, tuple(batches)) for a in attentions] + [(m, "sdpa", (extra_batch,)) for m in extra_models]
    merged: dict[str, Any] | None = None
    not_run: list[str] = []
    last_s = 0.0  # a configuration takes about as long as the one before it: start it only if that still fits
    for i, (name, attention, sizes) in enumerate(plan):
        if deadline.passed(last_s * len(sizes) / len(plan[i - 1][2]) if i else 0.0):
            not_run = [f"{m} {a} batch {','.join(map(str, b))}" for m, a, b in plan[i:]]
            print(f"time budget spent: {len(not_run)} configurations not run", flush=True)
            break
        spec = runner.BenchSpec(
            base=EngineConfig(model=name, weights="random", device=device, decode_tokens=tokens),
            models=(name,), attentions=(parse_choice(Attention, attention, "--compare"),),
            dtypes=(parse_choice(DType, dtype, "--dtypes"),), quantizations=(Quantization.NONE,), batch_sizes=sizes,
            warmup=1, repeats=2)
        started = time.perf_counter()
        result = runner.run(spec, inputs, env)
        for row in result["rows"]:
            print(name, attention, row["batch_size"], row["status"], _short(row), flush=True)
        took = time.perf_counter() - started
        if any(r["status"] == "ok" for r in result["rows"]):  # a skipped row costs nothing: keep the last estimate
            last_s = took
        print(f"  ({took:.1f} s)", flush=True)
        if merged is None:
            merged = result
            merged["spec"]["models"] = sorted({m for m, _, _ in plan})
            merged["spec"]["attentions"] = list(dict.fromkeys(a for _, a, _ in plan))
        else:
            merged["rows"] += result["rows"]
        _relative_to_sdpa(merged["rows"])
        merged["not_run"] = not_run
        update_json(out / "bench.json", "matrix", merged)
        if notes is not None:
            (notes / "40-bench.md").write_text(_markdown(merged, duration, tokens))
    if merged is not None:
        merged["not_run"] = not_run
        update_json(out / "bench.json", "matrix", merged)
        if notes is not None:
            (notes / "40-bench.md").write_text(_markdown(merged, duration, tokens))


def _short(row: dict[str, Any]) -> str:
    if row.get("status") != "ok":
        return ""
    vram = row.get("peak_vram_allocated_bytes")
    return (f"latency {row['latency_median_s']:.3f} s, RTFx {row['rtfx_median']:.1f}, {row['tokens_per_s']:.0f} tok/s"
            + (f", peak VRAM {vram / 2**30:.2f} GiB" if vram else ""))


def _relative_to_sdpa(rows: list[dict[str, Any]]) -> None:
    base = {(r["model"], r["dtype"], r["batch_size"]): r["rtfx_median"] for r in rows
            if r["attention"] == "sdpa" and r.get("status") == "ok"}
    for r in rows:
        b = base.get((r["model"], r["dtype"], r["batch_size"]))
        if r.get("status") == "ok" and b:
            r["vs_sdpa"] = r["rtfx_median"] / b


def _markdown(result: dict[str, Any], duration: float, tokens: int) -> str:
    env = result["environment"]
    lines = [f"## Random-weight bench: {duration:g} s of audio, {tokens} tokens per window, warm-up 1, repeats 2 "
             f"({env.get('cuda_device_name') or 'CPU'})", "",
             "| model | attn | dtype | batch | latency med s | RTFx | tok/s | peak VRAM GiB | x sdpa | status |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        ok = r.get("status") == "ok"
        vram = r.get("peak_vram_allocated_bytes")
        cells = [r["model"], r["attention"], r["dtype"], str(r["batch_size"]),
                 f"{r['latency_median_s']:.3f}" if ok else "", f"{r['rtfx_median']:.1f}" if ok else "",
                 f"{r['tokens_per_s']:.0f}" if ok else "", f"{vram / 2**30:.2f}" if vram else "",
                 f"{r['vs_sdpa']:.2f}" if "vs_sdpa" in r else "", r["status"].replace("|", "/")]
        lines.append("| " + " | ".join(cells) + " |")
    if result.get("not_run"):
        lines += ["", f"Not run (time budget): {', '.join(result['not_run'])}"]
    return "\n".join(lines) + "\n"


def oom(out: Path, device: str, model: str, batch: int, notes: Path | None) -> None:
    import numpy as np

    from whisperctl import EngineConfig, Transcriber
    from whisperctl.bench import runner
    from whisperctl.config import Attention, DType, Quantization
    from whisperctl.eligibility import memory_needed, probe

    env = probe()
    cuda = device.startswith("cuda")
    config = EngineConfig(model=model, weights="random", device=device, dtype="fp16" if cuda else "fp32",
                          attention="sdpa", quantization="none", decode_tokens=4, vad="none", batch_size=batch)
    report: dict[str, Any] = {"model": model, "batch": batch, "device": device}
    ballast: list[Any] = []
    t = Transcriber(config, env).load()

    def fill_gpu(_config: EngineConfig, _env: Any) -> Transcriber:  # the bench's factory: the loaded model, a full GPU
        if cuda and not ballast:
            import torch

            from whisperctl import models

            fits = memory_needed(models.architecture(model), t.plan.dtype, Quantization.NONE, 8, 1)
            leave = fits - memory_needed(models.architecture(model), t.plan.dtype, Quantization.NONE, 0, 1) + (1 << 30)
            free, total = torch.cuda.mem_get_info()
            ballast.append(torch.empty(max(free - leave, 0), dtype=torch.uint8, device=device))
            report["left_free_gib"] = round(leave / 2**30, 2)
            report["gpu_total_gib"] = round(total / 2**30, 1)
        return t

    audio_s = batch * WINDOW_S + 5.0
    spec = runner.BenchSpec(base=config, models=(model,), attentions=(Attention.SDPA,), dtypes=(config.dtype,),
                            quantizations=(Quantization.NONE,), batch_sizes=(batch,), warmup=0, repeats=1)
    rows = runner.run(spec, runner.load_inputs(duration=audio_s), env, transcriber_factory=fill_gpu)["rows"]
    report["bench_row"] = {k: v for k, v in rows[0].items() if k != "samples"}
    print("bench row:", rows[0]["status"], flush=True)

    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    handler = Keep(level=logging.WARNING)
    logging.getLogger("whisperctl").addHandler(handler)
    started = time.perf_counter()
    try:
        result = t.transcribe(np.zeros(int(audio_s * 16000), np.float32), t.options)
        report["transcribe"] = {"status": "finished", "duration_s": result.duration,
                                "seconds": round(time.perf_counter() - started, 2)}
    except Exception as exc:  # noqa: BLE001 - the result to report
        report["transcribe"] = {"status": f"failed: {type(exc).__name__}: {exc}"[:300]}
    finally:
        logging.getLogger("whisperctl").removeHandler(handler)
        ballast.clear()
    report["halvings"] = [m for m in records if "out of memory at batch size" in m]
    report["passed"] = (rows[0]["status"] == f"OOM at batch {batch}" and report["transcribe"]["status"] == "finished"
                        and bool(report["halvings"])) if cuda else None
    if not cuda:
        report["note"] = "no CUDA: the same calls ran on the CPU without a ballast; the out-of-memory was not exercised"
    update_json(out / "bench.json", "oom", report)
    lines = [f"## A real out-of-memory ({model}, batch {batch})", ""]
    if not cuda:
        lines.append(f"- {report['note']}")
    lines += [f"- bench row: `{rows[0]['status']}`" + (f" (GPU filled to leave {report['left_free_gib']} GiB)" if cuda else ""),
              f"- transcribe at batch {batch}: {report['transcribe']['status']}; halvings: "
              + ("; ".join(report["halvings"]) or "none"),
              f"- verdict: {'PASS' if report['passed'] else 'FAIL' if report['passed'] is False else 'not exercised'}", ""]
    if notes is not None:
        (notes / "50-oom.md").write_text("\n".join(lines))
    print("\n".join(lines))


def main(argv: list[str]) -> None:
    args = list(argv)
    device = _option(args, "--device", "cuda")
    notes = _option(args, "--notes", "")
    notes_dir = Path(notes) if notes else None
    model = _option(args, "--model", "large-v3")
    command, out = args[0], Path(args[1])
    out.mkdir(parents=True, exist_ok=True)
    if command == "matrix":
        ints = lambda text: [int(x) for x in text.split(",") if x]  # noqa: E731
        matrix(out, device, _option(args, "--dtype", "fp16"), model,
               _option(args, "--attentions", "sdpa,sdpa:flash,sdpa:efficient,sdpa:cudnn,eager,flash_attention_2").split(","),
               ints(_option(args, "--batch-sizes", "1,16")),
               [m for m in _option(args, "--extra-models", "distil-large-v3,large-v3-turbo").split(",") if m],
               int(_option(args, "--extra-batch", "16")), float(_option(args, "--duration", "120")),
               int(_option(args, "--tokens", "32")), notes_dir)
    elif command == "oom":
        oom(out, device, model, int(_option(args, "--batch", "64")), notes_dir)
    else:
        sys.exit(f"unknown command {command!r}: matrix | oom")
    read_json(out / "bench.json")  # fails loudly here if the file is unreadable


if __name__ == "__main__":
    main(sys.argv[1:])
