"""Load on an OpenAI-compatible transcription server: a speech folder as requests, at several concurrencies.

    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --manifest ../shared/speech/MANIFEST.tsv \
        --concurrency 1,4,16 --max-duration 30 --server-pid PID --out docs/serve-load.json

Each level sends every clip of the manifest (up to ``--max-duration`` seconds; ``--requests`` caps or repeats the
list) as ``POST /v1/audio/transcriptions`` (multipart: file, model, response_format=json) from that many client
threads, and reports requests/s, audio seconds per wall second (RTFx), p50/p95/p99 latency, errors, WER against the
manifest's references (the same normaliser as whisperctl's accuracy benchmark) and the server's peak RSS (its
process and children, sampled every 50 ms). Only 127.0.0.1 / localhost URLs are accepted: this is a load test.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _client():
    try:
        import httpx2 as httpx
    except ImportError:
        import httpx
    return httpx


def _clips(manifest: Path, max_duration: float) -> list[tuple[Path, float, str]]:
    with manifest.open() as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [(manifest.parent / r["file"], float(r["duration_s"]), r["reference_text"]) for r in rows
            if float(r["duration_s"]) <= max_duration]


class _Rss:
    """Peak RSS of a process and its children."""

    def __init__(self, pid: int | None):
        self.pid, self.peak, self._stop = pid, 0, threading.Event()
        self.samples: list[int] = []

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            try:
                rss = _rss_now(self.pid)
            except psutil.Error:
                break
            self.peak = max(self.peak, rss)
            self.samples.append(rss)
            self._stop.wait(0.05)

    def __enter__(self):
        if self.pid:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()


def level(url: str, model: str, clips: list, concurrency: int, requests: int, pid: int | None, key: str | None) -> dict:
    httpx = _client()
    from whisperctl.wer import wer

    todo = [clips[i % len(clips)] for i in range(requests)]
    payloads = {path: path.read_bytes() for path, _, _ in clips}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    results: list[tuple[float, int, str]] = [None] * len(todo)  # type: ignore[list-item]
    trend: list[tuple[int, float]] = []  # (requests done, server RSS MiB) every tenth of the run
    done = [0]
    lock = threading.Lock()

    def one(i: int) -> None:
        path, _, _ = todo[i]
        t0 = time.perf_counter()
        try:
            r = client.post(url + "/v1/audio/transcriptions", headers=headers, timeout=600,
                            files={"file": (path.name, payloads[path])},
                            data={"model": model, "model_name": model, "response_format": "json"})
            text = r.json().get("text", "") if r.status_code == 200 else ""
            results[i] = (time.perf_counter() - t0, r.status_code, text)
        except Exception as exc:  # noqa: BLE001 - a failed request is an error row, not a crash
            results[i] = (time.perf_counter() - t0, 0, f"{type(exc).__name__}")
        with lock:
            done[0] += 1
            if pid and done[0] % max(1, len(todo) // 10) == 0:
                trend.append((done[0], round(_rss_now(pid) / 2**20, 1)))

    with httpx.Client(limits=httpx.Limits(max_connections=concurrency + 4)) as client, _Rss(pid) as rss:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(len(todo))))
        wall = time.perf_counter() - t0
    ok = [i for i, r in enumerate(results) if r[1] == 200]
    lat = sorted(results[i][0] for i in ok)

    def pct(p: float) -> float | None:
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))] if lat else None

    audio = sum(todo[i][1] for i in ok)
    return {
        "concurrency": concurrency, "requests": len(todo), "errors": len(todo) - len(ok),
        "wall_s": round(wall, 2), "requests_per_s": round(len(ok) / wall, 3), "rtfx": round(audio / wall, 2),
        "p50_s": pct(50), "p95_s": pct(95), "p99_s": pct(99), "mean_s": statistics.mean(lat) if lat else None,
        "wer": round(wer([todo[i][2] for i in ok], [results[i][2] for i in ok]), 4) if ok else None,
        "server_peak_rss_mb": round(rss.peak / 2**20, 1) if rss.peak else None,
        "rss_trend_mb": trend, "latencies": {todo[i][0].name: round(results[i][0], 3) for i in ok},
    }


def _rss_now(pid: int) -> int:
    import psutil

    proc = psutil.Process(pid)
    return proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))


def inprocess(clips: list, threads: int) -> dict[str, float]:
    """Each clip's wall time through the library in this process, model loaded and warm (what the CLI spends
    on it after start-up): the floor a server's latency at concurrency 1 is compared with."""
    from whisperctl import EngineConfig, Transcriber

    t = Transcriber(EngineConfig(threads=threads))
    t.transcribe(str(clips[0][0]))
    out = {}
    for path, _, _ in clips:
        t0 = time.perf_counter()
        t.transcribe(str(path))
        out[path.name] = round(time.perf_counter() - t0, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True)
    ap.add_argument("--manifest", type=Path, required=True)
    ap.add_argument("--model", default="tiny.en", help="the model field sent (faster-whisper-server: its YAML name)")
    ap.add_argument("--concurrency", default="1,2,4,8,16,32")
    ap.add_argument("--requests", type=int, default=0, help="requests per level (0: every clip once)")
    ap.add_argument("--max-duration", type=float, default=30.0)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--api-key")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--inprocess-threads", type=int, default=0,
                    help="also time each clip in this process (whisperctl, model loaded, these threads) first")
    args = ap.parse_args()
    host = urllib.parse.urlparse(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"serve_load: {args.url}: a load test only runs against this machine (127.0.0.1)")
    clips = _clips(args.manifest, args.max_duration)
    rows = []
    if args.inprocess_threads:
        rows.append({"label": "in-process", "latencies": inprocess(clips, args.inprocess_threads)})
        print(json.dumps(rows[-1]), flush=True)
    for c in (int(x) for x in args.concurrency.split(",")):
        row = {"label": args.label, **level(args.url.rstrip("/"), args.model, clips, c, args.requests or len(clips),
                                            args.server_pid, args.api_key)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.out:
        existing = json.loads(args.out.read_text()) if args.out.exists() else []
        args.out.write_text(json.dumps(existing + rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
