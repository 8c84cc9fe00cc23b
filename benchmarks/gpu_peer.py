"""whisperctl against the transformers ASR pipeline as insanely-fast-whisper runs it, same weights, same GPU.

    python benchmarks/gpu_peer.py real MODEL_DIR AUDIO REFERENCE_TSV OUT_DIR [--minutes 30]
    python benchmarks/gpu_peer.py random large-v3 OUT_DIR [--minutes 10] [--tokens 64]

The pipeline: fp16, attn_implementation="sdpa", chunk_length_s=30, batch_size=24 (insanely-fast-whisper's
defaults). whisperctl: fp16 and bf16, sdpa, batch 24. ``real``: a converted checkpoint (tiny.en) on the audio tiled
to ``--minutes``, with WER; ``random``: the alias's architecture with random weights saved once and loaded by
both, every window forced to ``--tokens`` tokens. Runs alternate (pipeline, whisperctl, …), 3 each after one
warm-up each; the medians and the ratio go to OUT_DIR/peer_<mode>.json and .md.
"""

from __future__ import annotations

import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPEATS = 3


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _pipeline(model_dir: str, device: str, forced: int | None):
    import torch
    from transformers import pipeline

    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    pipe = pipeline("automatic-speech-recognition", model=model_dir, dtype=dtype, device=device,
                    model_kwargs={"attn_implementation": "sdpa"})
    if pipe.tokenizer.pad_token_id is None:  # batching needs one; Whisper pads with <|endoftext|>
        pipe.tokenizer.pad_token_id = pipe.model.config.eos_token_id
    generate_kwargs = {"min_new_tokens": forced, "max_new_tokens": forced} if forced else {}

    def run(audio: np.ndarray) -> str:
        out = pipe({"raw": audio, "sampling_rate": 16000}, chunk_length_s=30, batch_size=24,
                   return_timestamps=forced is None, generate_kwargs=generate_kwargs)
        return out["text"]

    return run


def _whisperctl(model_dir: str, device: str, dtype: str, forced: int | None):
    from whisperctl import EngineConfig, Transcriber

    t = Transcriber(EngineConfig(model=model_dir, device=device, dtype=dtype, attention="sdpa", batch_size=24,
                                 decode_tokens=forced, temperature=0 if forced else (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)))
    t.load()
    return lambda audio: t.transcribe(audio, name="peer").text


def measure(runners: dict, audio: np.ndarray) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runners}
    texts: dict[str, str] = {}
    for name, fn in runners.items():  # warm-up
        texts[name] = fn(audio)
    for _ in range(REPEATS):
        for name, fn in runners.items():  # alternating
            _sync()
            started = time.perf_counter()
            texts[name] = fn(audio)
            _sync()
            times[name].append(time.perf_counter() - started)
    seconds = len(audio) / 16000
    return {name: {"seconds": times[name], "median_s": statistics.median(times[name]),
                   "rtfx": seconds / statistics.median(times[name]), "text": texts[name]} for name in runners}


def main(argv: list[str]) -> None:
    from whisperctl.eligibility import environment_summary, probe

    minutes = float(argv[argv.index("--minutes") + 1]) if "--minutes" in argv else None
    tokens = int(argv[argv.index("--tokens") + 1]) if "--tokens" in argv else 64
    device = argv[argv.index("--device") + 1] if "--device" in argv else "cuda:0"
    mode = argv[0]
    if mode == "real":
        from whisperctl import audio as audio_mod, cache
        from whisperctl.wer import wer

        ct2_dir, audio_path, refs_path, out = argv[1], Path(argv[2]), Path(argv[3]), Path(argv[4])
        model_dir = str(cache.converted_checkpoint(ct2_dir))
        audio = audio_mod.load(audio_path)  # 16 kHz mono float32, the same array for both
        with refs_path.open() as fh:
            reference = {r["file"]: r["reference_text"] for r in csv.DictReader(fh, delimiter="\t")}[audio_path.name]
        reps = max(1, int(np.ceil((minutes or 30) * 60 * 16000 / len(audio))))
        audio = np.tile(audio, reps)
        reference = " ".join([reference] * reps)
        forced = None
    else:
        from whisperctl import EngineConfig, Transcriber

        alias, out = argv[1], Path(argv[2])
        model_dir = f"/tmp/{alias}-random"
        if not Path(model_dir, "config.json").is_file():  # one set of random weights, loaded by both
            t = Transcriber(EngineConfig(model=alias, weights="random", device="cpu", dtype="fp32", quantization="none"))
            lm = t.loaded
            lm.model.save_pretrained(model_dir)
            lm.tokenizer.save_pretrained(model_dir)
            lm.feature_extractor.save_pretrained(model_dir)
            lm.model.generation_config.save_pretrained(model_dir)
        audio = np.random.default_rng(0).standard_normal(int((minutes or 10) * 60 * 16000)).astype(np.float32) * 0.05
        reference = None
        forced = tokens
    dtype_default = "fp16" if device.startswith("cuda") else "fp32"
    runners = {
        "transformers pipeline (fp16, sdpa, chunk 30 s, batch 24)": _pipeline(model_dir, device, forced),
        f"whisperctl ({dtype_default}, sdpa, batch 24)": _whisperctl(model_dir, device, dtype_default, forced),
    }
    if device.startswith("cuda"):
        runners["whisperctl (bf16, sdpa, batch 24)"] = _whisperctl(model_dir, device, "bf16", forced)
    results = measure(runners, audio)
    if reference is not None:
        for r in results.values():
            r["wer"] = wer([reference], [r["text"]])
    base = next(iter(results.values()))["rtfx"]
    for r in results.values():
        r["vs_pipeline"] = r["rtfx"] / base
        r["text"] = r["text"][:500]
    out.mkdir(parents=True, exist_ok=True)
    payload = {"mode": mode, "model": model_dir, "audio_seconds": len(audio) / 16000, "forced_tokens": forced,
               "repeats": REPEATS, "env": environment_summary(probe()), "results": results}
    (out / f"peer_{mode}.json").write_text(json.dumps(payload, indent=1, default=str))
    lines = [f"{mode} weights, {len(audio) / 60 / 16000:.1f} min of audio" + (f", {forced} tokens per window" if forced else ""),
             "", "| runner | median s | RTFx | × pipeline | WER |", "| --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        w = f"{100 * r['wer']:.2f} %" if "wer" in r else "–"
        lines.append(f"| {name} | {r['median_s']:.2f} | {r['rtfx']:.1f} | {r['vs_pipeline']:.2f} | {w} |")
    (out / f"peer_{mode}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
