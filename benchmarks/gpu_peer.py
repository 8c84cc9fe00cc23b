"""whisperctl against the transformers ASR pipeline as insanely-fast-whisper runs it, same weights, same GPU.

    python benchmarks/gpu_peer.py real MODEL_DIR AUDIO REFERENCE_TSV OUT_DIR [--minutes 10] [--best-from JSON]
    python benchmarks/gpu_peer.py random large-v3 OUT_DIR [--minutes 10] [--tokens 64]
    common: [--device cuda] [--repeats 3] [--notes DIR]

The pipeline: fp16, attn_implementation="sdpa", chunk_length_s=30, batch_size=24 (insanely-fast-whisper's
defaults), greedy (num_beams=1, set explicitly: transformers 5's pipeline defaults to beam 5). whisperctl: the same settings (fp16, sdpa, batch 24), and its best configuration when another one is
known: ``--best-from`` names gpu_real_weights.py's JSON, whose fastest default-mode row on LJ within the WER bound
gives the dtype and attention (batch 24, VAD on: whisperctl's defaults otherwise). ``real``: a converted
checkpoint on the audio tiled (whole copies) to at least ``--minutes``, with WER; ``random``: the alias's
architecture with random weights saved once and loaded by both, every window forced to ``--tokens`` tokens.
Runs alternate (pipeline, whisperctl, …), ``--repeats`` each after one warm-up each, until ``STEP_DEADLINE``;
medians and ratios go to OUT_DIR/peer.json[mode], the table to NOTES_DIR/60-peer.md.
"""

from __future__ import annotations

import csv
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from gpu_report import Deadline, read_json, update_json



def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _pipeline(model_dir: str, device: str, forced: int | None) -> Callable[[np.ndarray], str]:
    import torch
    from transformers import pipeline

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = pipeline("automatic-speech-recognition", model=model_dir, dtype=dtype, device=device,
                    model_kwargs={"attn_implementation": "sdpa"})
    if pipe.tokenizer.pad_token_id is None:  # batching needs one; Whisper pads with <|endoftext|>
        pipe.tokenizer.pad_token_id = pipe.model.config.eos_token_id
    # Greedy, as the recipe decodes on transformers 4.x: transformers 5's pipeline otherwise defaults to beam 5
    # (its _default_generation_config) for a checkpoint whose generation_config.json does not set num_beams.
    generate_kwargs: dict[str, Any] = {"num_beams": 1}
    if forced:
        generate_kwargs.update(min_new_tokens=forced, max_new_tokens=forced)

    def run(audio: np.ndarray) -> str:
        out = pipe({"raw": audio, "sampling_rate": 16000}, chunk_length_s=30, batch_size=24,
                   return_timestamps=forced is None, generate_kwargs=generate_kwargs)
        return out["text"]

    return run


def _whisperctl(model_dir: str, device: str, dtype: str, attention: str, forced: int | None) -> Callable[[np.ndarray], str]:
    from whisperctl import EngineConfig, Transcriber

    t = Transcriber(EngineConfig(model=model_dir, device=device, dtype=dtype, attention=attention, batch_size=24,
                                 decode_tokens=forced, temperature=0 if forced else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0),
                                 vad="none" if forced else None))
    t.load()
    return lambda audio: t.transcribe(audio, name="peer").text


def best_config(path: Path | None, fallback: tuple[str, str]) -> tuple[str, str, str]:
    """(dtype, attention, why) of the fastest default-mode row on the longest file within the WER bound."""
    rows = [r for r in read_json(path).get("rows", []) if r.get("mode") == "default" and r.get("within_bound")] if path else []
    if not rows:
        return (*fallback, "no real-weights result to choose from")
    longest = max(rows[0]["decode_s"], key=lambda f: rows[0]["decode_s"][f])
    best = min(rows, key=lambda r: r["decode_s"][longest])
    return best["dtype"], best["attention"], f"fastest on {longest} in gpu_real_weights ({best['decode_s'][longest]:.2f} s)"


def measure(runners: dict[str, Callable[[np.ndarray], str]], audio: np.ndarray, repeats: int, deadline: Deadline) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runners}
    texts: dict[str, str] = {}
    for name, fn in runners.items():  # warm-up
        started = time.perf_counter()
        texts[name] = fn(audio)
        print(f"warm-up {name}: {time.perf_counter() - started:.2f} s", flush=True)
    round_s = 0.0
    for i in range(repeats):
        if i and deadline.passed(round_s):
            print(f"time budget: {i} of {repeats} repeats", flush=True)
            break
        began = time.perf_counter()
        for name, fn in runners.items():  # alternating
            _sync()
            started = time.perf_counter()
            texts[name] = fn(audio)
            _sync()
            times[name].append(time.perf_counter() - started)
        round_s = time.perf_counter() - began
    seconds = len(audio) / 16000
    return {name: {"seconds": times[name], "median_s": statistics.median(times[name]),
                   "rtfx": seconds / statistics.median(times[name]), "text": texts[name]} for name in runners}


def main(argv: list[str]) -> None:
    from whisperctl.eligibility import environment_summary, probe

    def option(name: str, default: str) -> str:
        return argv[argv.index(name) + 1] if name in argv else default

    minutes = float(option("--minutes", "10"))
    device = option("--device", "cuda")
    repeats = int(option("--repeats", "3"))
    notes = Path(option("--notes", "")) if "--notes" in argv else None
    mode = argv[0]
    cuda = device.startswith("cuda")
    half = "fp16" if cuda else "fp32"
    runners: dict[str, Callable[[np.ndarray], str]] = {}
    if mode == "real":
        from whisperctl import audio as audio_mod, cache
        from whisperctl.wer import wer

        ct2_dir, audio_path, refs_path, out = argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4])
        model_dir = str(cache.converted_checkpoint(ct2_dir))
        audio = audio_mod.load(audio_path)  # 16 kHz mono float32, the same array for both
        with refs_path.open() as fh:
            reference = {r["file"]: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}[audio_path.name]
        copies = max(1, int(np.ceil(minutes * 60 * 16000 / len(audio))))
        audio = np.tile(audio, copies)
        reference = " ".join([reference] * copies)
        forced = None
        best = best_config(Path(option("--best-from", "")) if "--best-from" in argv else None, (half, "sdpa"))
    else:
        from whisperctl import EngineConfig, Transcriber

        alias, out = argv[1], Path(argv[2])
        model_dir = f"/tmp/{alias}-random"
        if not Path(model_dir, "config.json").is_file():  # one set of random weights, loaded by both
            lm = Transcriber(EngineConfig(model=alias, weights="random", device="cpu", dtype="fp32", quantization="none")).loaded
            for part in (lm.model, lm.tokenizer, lm.feature_extractor, lm.model.generation_config):
                part.save_pretrained(model_dir)
        audio = np.random.default_rng(0).standard_normal(int(minutes * 60 * 16000)).astype(np.float32) * 0.05
        reference = None
        forced = int(option("--tokens", "64"))
        best = (half, "sdpa", "random weights: the pipeline's own settings")
    pipeline_name = f"transformers pipeline ({half}, sdpa, chunk 30 s, batch 24, greedy)"
    runners[pipeline_name] = _pipeline(model_dir, device, forced)
    runners[f"whisperctl ({half}, sdpa, batch 24)"] = _whisperctl(model_dir, device, half, "sdpa", forced)
    if best[:2] != (half, "sdpa"):
        runners[f"whisperctl best ({best[0]}, {best[1]}, batch 24)"] = _whisperctl(model_dir, device, best[0], best[1], forced)
    results = measure(runners, audio, repeats, Deadline())
    if reference is not None:
        for r in results.values():
            r["wer"] = wer([reference], [r["text"]])
    base = results[pipeline_name]["rtfx"]
    for r in results.values():
        r["vs_pipeline"] = r["rtfx"] / base
        r["text"] = r["text"][:500]
    out.mkdir(parents=True, exist_ok=True)
    payload = {"model": model_dir, "audio_seconds": len(audio) / 16000, "forced_tokens": forced, "repeats": repeats,
               "best": {"dtype": best[0], "attention": best[1], "why": best[2]},
               "env": environment_summary(probe()), "results": results}
    update_json(out / "peer.json", mode, payload)
    lines = [f"## Peer: the transformers pipeline ({mode} weights, {len(audio) / 60 / 16000:.1f} min of audio"
             + (f", {forced} tokens per window" if forced else "") + f", median of {len(next(iter(results.values()))['seconds'])})",
             "", f"whisperctl's best here: {best[0]} {best[1]} ({best[2]})", "",
             "| runner | median s | RTFx | x pipeline | WER |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        w = f"{100 * r['wer']:.2f} %" if "wer" in r else "–"
        lines.append(f"| {name} | {r['median_s']:.2f} | {r['rtfx']:.1f} | {r['vs_pipeline']:.2f} | {w} |")
    if notes is not None:
        (notes / f"60-peer-{mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
