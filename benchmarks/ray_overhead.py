"""What running on Ray costs on one machine: the plain CLI against `--ray auto` with 1 and 2 workers, whole
processes, and Ray Data's per-file scheduling overhead.

    pip install -e '.[ray]'
    python benchmarks/ray_overhead.py --rounds 3            # W1: the clips of ../shared/speech (not the concatenation)

Each round runs, one after the other (alternating, nothing else running):
  plain    whisperctl transcribe FILES -o DIR -f json -q --threads T
  ray-1    ... --ray auto --workers 1 --cpus-per-worker T     (one actor, T threads: the plain run's resources)
  ray-2    ... --ray auto --workers 2 --cpus-per-worker T/2   (two actors sharing the same cores)
Each `--ray auto` process starts its own local Ray cluster (as a user's first run does) and stops it at exit.
Reported: wall per configuration (median, min, max), the ratio to plain per round, the WER of each (they must agree).

Then, in this process, the scheduling overhead alone: a local cluster with warm actors that do nothing, a dataset of
N rows mapped through them one row per task (as `files_per_task=1`) and four rows per task (the default): seconds
per file that Ray Data adds, whatever the model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from cpu_vs_faster_whisper import cpu_description, timed, workload  # noqa: E402


def cli(files, out: Path, extra: list[str]) -> list[str]:
    exe = Path(sys.executable).with_name("whisperctl")
    return [str(exe), "transcribe", *map(str, files), "-o", str(out), "-f", "json", "-q", "--overwrite", *extra]


def texts(files, out: Path) -> list[str]:
    return [json.loads((out / f"{Path(f).stem}.json").read_text())["text"] for f in files]


class _Nothing:
    def __call__(self, batch):
        return batch


def scheduling_overhead(rows: int, cpus: int) -> dict[str, float]:
    import ray
    import ray.data

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    out = {}
    try:
        items = [{"input": f"/corpus/file-{i}.wav"} for i in range(rows)]
        for per_task in (1, 4, 1, 4):  # the first pass of each warms the actors up
            t0 = time.perf_counter()
            ds = ray.data.from_items(items, override_num_blocks=max(1, rows // per_task))
            ds = ds.map_batches(_Nothing, batch_size=per_task, compute=ray.data.ActorPoolStrategy(size=2), num_cpus=1)
            n = sum(len(b["input"]) for b in ds.iter_batches(batch_size=None))
            assert n == rows
            out[f"{per_task} per task"] = (time.perf_counter() - t0) / rows
    finally:
        ray.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workload", default="folder", choices=["folder", "long"])
    p.add_argument("--overhead-rows", type=int, default=400)
    args = p.parse_args()

    from whisperctl.wer import wer

    scratch = Path(tempfile.gettempdir()) / "whisperctl-bench"
    scratch.mkdir(exist_ok=True)
    files, refs = workload(args.workload, 0, scratch)
    half = max(1, args.threads // 2)
    configs = {
        "plain": ["--threads", str(args.threads)],
        "ray-1": ["--ray", "auto", "--workers", "1", "--cpus-per-worker", str(args.threads)],
        "ray-2": ["--ray", "auto", "--workers", "2", "--cpus-per-worker", str(half)],
    }
    import ray

    print(f"CPU: {cpu_description()}; ray {ray.__version__}; workload {args.workload}: {len(files)} file(s); "
          f"threads {args.threads}")
    walls: dict[str, list[float]] = {k: [] for k in configs}
    scores: dict[str, float] = {}
    for r in range(args.rounds):
        for name, extra in configs.items():
            with tempfile.TemporaryDirectory(dir=scratch) as out:
                wall, rss, _, _ = timed(cli(files, Path(out), extra), dict(os.environ))
                scores[name] = wer(refs, texts(files, Path(out)))
            walls[name].append(wall)
            print(f"round {r + 1} {name}: {wall:.2f} s wall, driver peak RSS {rss} MiB, WER {100 * scores[name]:.2f} %",
                  flush=True)
    print()
    for name in configs:
        w = walls[name]
        ratios = [a / b for a, b in zip(w, walls["plain"])]
        print(f"{name}: wall median {statistics.median(w):.2f} s (min {min(w):.2f}, max {max(w):.2f}); "
              f"wall / plain per round {', '.join(f'{x:.2f}' for x in ratios)}, median {statistics.median(ratios):.2f}; "
              f"WER {100 * scores[name]:.2f} %")
    per_file = scheduling_overhead(args.overhead_rows, args.threads)
    print(f"Ray Data scheduling, {args.overhead_rows} rows through 2 idle actors (second pass): "
          + ", ".join(f"{k}: {1000 * v:.2f} ms per file" for k, v in per_file.items()))


if __name__ == "__main__":
    main()
