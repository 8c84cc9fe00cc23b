"""The server's counters, gauges and histograms, written in Prometheus' text format (``GET /metrics``)."""

from __future__ import annotations

import bisect
import threading
from typing import Callable

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0, 150.0, 300.0, 900.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last: +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def lines(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        out, running = [], 0
        for edge, count in zip([*self.buckets, "+Inf"], self.counts):
            running += count
            out.append(f'{name}_bucket{{{labels}{sep}le="{edge}"}} {running}')
        braces = f"{{{labels}}}" if labels else ""
        out += [f"{name}_sum{braces} {self.total:.6f}", f"{name}_count{braces} {self.n}"]
        return out


class Metrics:
    """Thread-safe: the web handlers and the decoding threads both report here."""

    def __init__(self, gauges: dict[str, tuple[str, Callable[[], float]]]):
        self._lock = threading.Lock()
        self._gauges = gauges  # name -> (help, read now)
        self.requests: dict[tuple[str, str], int] = {}  # (endpoint, outcome) -> count
        self.latency: dict[str, Histogram] = {}  # endpoint -> seconds from arrival to the last byte's start
        self.batch = Histogram(BATCH_BUCKETS)
        self.audio_s = 0.0

    def request(self, endpoint: str, outcome: str, seconds: float | None = None, audio_s: float = 0.0) -> None:
        with self._lock:
            key = (endpoint, outcome)
            self.requests[key] = self.requests.get(key, 0) + 1
            if seconds is not None:
                self.latency.setdefault(endpoint, Histogram(LATENCY_BUCKETS)).observe(seconds)
            self.audio_s += audio_s

    def batch_size(self, windows: int) -> None:
        with self._lock:
            self.batch.observe(windows)

    def render(self) -> str:
        with self._lock:
            lines = ["# HELP whisperctl_requests_total Requests by endpoint and outcome (HTTP status).",
                     "# TYPE whisperctl_requests_total counter"]
            for (endpoint, outcome), count in sorted(self.requests.items()):
                lines.append(f'whisperctl_requests_total{{endpoint="{endpoint}",outcome="{outcome}"}} {count}')
            lines += ["# HELP whisperctl_request_seconds Request latency: arrival to response (streams: to their end).",
                      "# TYPE whisperctl_request_seconds histogram"]
            for endpoint, hist in sorted(self.latency.items()):
                lines += hist.lines("whisperctl_request_seconds", f'endpoint="{endpoint}"')
            lines += ["# HELP whisperctl_batch_windows Windows per decoded batch (across requests).",
                      "# TYPE whisperctl_batch_windows histogram", *self.batch.lines("whisperctl_batch_windows"),
                      "# HELP whisperctl_audio_seconds_total Seconds of audio transcribed.",
                      "# TYPE whisperctl_audio_seconds_total counter", f"whisperctl_audio_seconds_total {self.audio_s:.3f}"]
        for name, (help_text, read) in self._gauges.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {read()}"]
        return "\n".join(lines) + "\n"
