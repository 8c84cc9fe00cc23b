"""Does `whisperctl bench` report the RTFx you would measure by hand? (issue: trust, within 5 %)

Times the same engine call two ways on the same loaded model, alternating, and prints both medians and
their ratio:
  - bench:  whisperctl.bench.runner.measure (what `whisperctl bench` reports as rtfx_median)
  - manual: time.perf_counter() around Transcriber.transcribe_many(), nothing else

Usage: python benchmarks/bench_vs_manual.py [AUDIO ...] [--rounds 5] [--batch-size 8] [--attn sdpa]
"""

from __future__ import annotations

import argparse
import statistics
import time

from whisperctl import EngineConfig, Transcriber
from whisperctl.bench import runner
from whisperctl.eligibility import probe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("audio", nargs="*")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--attn", default="sdpa")
    parser.add_argument("--model", default="tiny.en")
    args = parser.parse_args()

    inputs = runner.load_inputs(args.audio)
    config = EngineConfig(model=args.model, attention=args.attn, batch_size=args.batch_size)
    spec = runner.BenchSpec(config, (args.model,), (config.attention,), (config.dtype,), (config.quantization,),
                            (args.batch_size,), warmup=1, repeats=1)
    env = probe()
    t = Transcriber(config, env).load()
    audio_s = sum(i.duration for i in inputs)
    list(t.transcribe_many([(i.name, i.samples) for i in inputs]))  # warm-up
    bench_rtfx, manual_rtfx = [], []
    for _ in range(args.rounds):
        bench_rtfx.append(runner.measure(t, config, inputs, spec, "cpu")["rtfx_median"])
        t0 = time.perf_counter()
        list(t.transcribe_many([(i.name, i.samples) for i in inputs]))
        manual_rtfx.append(audio_s / (time.perf_counter() - t0))
    b, m = statistics.median(bench_rtfx), statistics.median(manual_rtfx)
    print(f"audio {audio_s:.1f} s, {args.model} {args.attn} batch {args.batch_size}, {args.rounds} alternating rounds")
    print(f"bench  RTFx median {b:.2f}  samples {[round(x, 2) for x in bench_rtfx]}")
    print(f"manual RTFx median {m:.2f}  samples {[round(x, 2) for x in manual_rtfx]}")
    print(f"ratio bench/manual {b / m:.3f}  ({'within' if abs(b / m - 1) <= 0.05 else 'OUTSIDE'} 5 %)")


if __name__ == "__main__":
    main()
