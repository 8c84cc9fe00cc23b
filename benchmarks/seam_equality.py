"""Token equality through the backend seam (issue 26): does every decoding option give the same windows as the
code before the seam (cfe7bd9)?

``dump`` decodes every file of ../shared/speech/MANIFEST.tsv (the long LJ file included) with whichever whisperctl
is on the path, at the WindowDecoder level: each file cut into fixed 30 s windows (no VAD, no seeking, so the
comparison is about decoding, not segmentation), batches of 8 windows in manifest order, the bundled tiny.en with
the default load options (CPU: int8), 1 torch thread (``--threads``) and the decoder asked for. Cases:

- ``greedy``: the default policy (temperatures 0, 0.2 … 1, the default thresholds), beam 1;
- ``beam5``: the same with beam 5;
- ``fallback``: every window decoded again at 0.2 and 0.4 (``logprob_threshold`` 0, no no-speech rule), seed 0;
  every pass's tokens are kept (``attempts``), not only the decode the policy keeps;
- ``word``: greedy with word timestamps (each text token's start and end, from the alignment pass);
- ``prompted``: greedy, window k prompted with the reference text of window k-1 (none for every fourth window),
  so one batch holds prompts of different lengths.

Per window it writes the tokens, mean log-probability, no-speech probability, kept temperature, compression ratio,
silence verdict and token times to a JSON file; ``diff`` compares two dumps case by case.

    git worktree add --detach ../wt-before cfe7bd9
    PYTHONPATH=../wt-before python benchmarks/seam_equality.py dump --decoder auto --out /tmp/before-lean.json
    PYTHONPATH=. python benchmarks/seam_equality.py dump --decoder auto --out /tmp/after-lean.json
    python benchmarks/seam_equality.py diff /tmp/before-lean.json /tmp/after-lean.json

``--decoder generate`` runs transformers' generate() (slower: ``--cases`` and ``--files`` pick a subset). The code
before the seam knows ``auto`` (the lean loop on the CPU) and ``generate``; it has no ``--decoder lean``.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
WINDOW_S = 30
BATCH = 8
CASES = {
    "greedy": {},
    "beam5": {"beam_size": 5},
    "fallback": {"temperature": (0.0, 0.2, 0.4), "logprob_threshold": 0.0, "no_speech_threshold": None, "seed": 0},
    "word": {"timestamps": "word"},
    "prompted": {},
}


def windows(speech: Path, only: list[str]) -> list[dict]:
    """Every manifest file cut into fixed 30 s windows, in manifest order."""
    from whisperctl import audio

    out = []
    for row in csv.DictReader((speech / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"):
        if only and not any(part in row["file"] for part in only):
            continue
        samples = audio.load(str(speech / row["file"]))
        step = WINDOW_S * audio.SAMPLE_RATE
        for k, start in enumerate(range(0, len(samples), step)):
            out.append(dict(file=row["file"], window=k, start_s=start / audio.SAMPLE_RATE, samples=samples[start : start + step],
                            reference=row["reference_text"]))
    return out


def record_passes(decoder, passes: list) -> None:
    """Log every decoding pass of ``decoder`` (the first and each fallback) as [(temperature, tokens, avg_logprob)]:
    a wrapper around the private ``WindowDecoder._pass``, which both sides of the seam have."""
    inner = decoder._pass

    def logged(*args, **kwargs):
        got = inner(*args, **kwargs)
        results = got[0] if isinstance(got, tuple) else got  # before the seam _pass also returned the encoder output
        passes.append([(r.temperature, r.tokens, round(r.avg_logprob, 6)) for r in results])
        return got

    decoder._pass = logged


def decode_case(lm, config, case: str, wins: list[dict]) -> list[dict]:
    from whisperctl.config import Timestamps
    from whisperctl.decoding import WindowDecoder

    changes = dict(CASES[case])
    if changes.get("timestamps") == "word":
        changes["timestamps"] = Timestamps.WORD
    decoder = WindowDecoder(lm, config.decode_options(**changes))
    out, t0 = [], time.perf_counter()
    for b in range(0, len(wins), BATCH):
        batch = wins[b : b + BATCH]
        prompts = None
        if case == "prompted":
            prompts = [[] if (b + j) % 4 == 0 else lm.text_tokens(wins[b + j - 1]["reference"]) for j in range(len(batch))]
        passes: list = []
        record_passes(decoder, passes)
        results = decoder.decode([w["samples"] for w in batch], [None] * len(batch), prompts,
                                 groups=[w["file"] for w in batch])
        for j, (w, r) in enumerate(zip(batch, results)):
            out.append(dict(
                file=w["file"], window=w["window"], start_s=w["start_s"], tokens=r.tokens, avg_logprob=r.avg_logprob,
                no_speech_prob=r.no_speech_prob, temperature=r.temperature, compression_ratio=r.compression_ratio,
                silent=r.silent, text=r.text, token_times=r.token_times,
                attempts=[p[j] for p in passes if len(p) == len(batch)] if case == "fallback" else None,
            ))
        print(f"  {case}: {min(b + BATCH, len(wins))}/{len(wins)} windows, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return out


def dump(args) -> None:
    import subprocess

    import whisperctl
    from whisperctl import EngineConfig, Transcriber

    root = Path(whisperctl.__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"whisperctl from {root} ({commit}), decoder {args.decoder}", file=sys.stderr)
    config = EngineConfig(decoder=args.decoder, threads=args.threads)
    lm = Transcriber(config).loaded
    wins = windows(Path(args.speech), args.files)
    out = dict(code=str(root), commit=commit, decoder=args.decoder, cases={})
    for case in args.cases:  # written after each case: a long run that is stopped keeps what it finished
        out["cases"][case] = decode_case(lm, config, case, wins)
        Path(args.out).write_text(json.dumps(out))


def max_delta(a: list[dict], b: list[dict], key: str) -> float:
    """Largest |Δ key| over the windows with the same tokens on both sides."""
    deltas = [abs(x[key] - y[key]) for x, y in zip(a, b) if x["tokens"] == y["tokens"] and x[key] is not None and y[key] is not None]
    return max(deltas, default=0.0)


def time_delta(x: dict, y: dict) -> float | None:
    """Largest |Δ| of a token's start or end time, where both windows have the same timed tokens."""
    if not x["token_times"] or not y["token_times"] or len(x["token_times"]) != len(y["token_times"]):
        return None
    return max(abs(p - q) for s, t in zip(x["token_times"], y["token_times"]) for p, q in zip(s[:2], t[:2]))


def diff(args) -> None:
    before, after = json.loads(Path(args.before).read_text()), json.loads(Path(args.after).read_text())
    print(f"before: {before['code']} ({before['commit']}); after: {after['code']} ({after['commit']}); "
          f"decoder {before['decoder']} / {after['decoder']}\n")
    print("| case | clips | windows | identical tokens | max Δ avg_logprob | max Δ no_speech | max Δ token time (s) | kept at T > 0 | other differences |")
    print("|---|---|---|---|---|---|---|---|---|")
    notes = []
    for case in [c for c in before["cases"] if c in after["cases"]]:
        a, b = before["cases"][case], after["cases"][case]
        if [(w["file"], w["window"]) for w in a] != [(w["file"], w["window"]) for w in b]:
            sys.exit(f"{case}: the two dumps hold different windows")
        same = sum(x["tokens"] == y["tokens"] for x, y in zip(a, b))
        times = [d for d in (time_delta(x, y) for x, y in zip(a, b)) if d is not None]
        other = 0
        for x, y in zip(a, b):
            what = [k for k in ("tokens", "temperature", "silent", "attempts") if x[k] != y[k]]
            if what:
                other += 1
                notes.append(f"{case} {x['file']} #{x['window']}: {', '.join(what)} differ\n"
                             f"    before (T={x['temperature']}): {x['text']!r}\n    after  (T={y['temperature']}): {y['text']!r}")
        time_col = f"{max(times):.3g}" if times else "-"
        print(f"| {case} | {len({w['file'] for w in a})} | {len(a)} | {same} / {len(a)} | {max_delta(a, b, 'avg_logprob'):.3g} "
              f"| {max_delta(a, b, 'no_speech_prob'):.3g} | {time_col} "
              f"| {sum(x['temperature'] > 0 for x in a)} | {other} windows |")
    print("\n" + "\n".join(notes) if notes else "\nno window differs in tokens, temperature, silence or fallback attempts")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump", help="decode the shared folder with the whisperctl on the path; write JSON")
    d.add_argument("--decoder", default="auto", help="auto (the lean loop on the CPU) or generate")
    d.add_argument("--cases", type=lambda s: s.split(","), default=list(CASES), help=f"comma-separated, of {','.join(CASES)}")
    d.add_argument("--files", nargs="*", default=[], help="only manifest files whose path contains one of these")
    d.add_argument("--threads", type=int, default=1, help="torch threads (the same on both sides: sums may depend on it)")
    d.add_argument("--speech", default=str(SPEECH))
    d.add_argument("--out", required=True)
    c = sub.add_parser("diff", help="compare two dumps")
    c.add_argument("before")
    c.add_argument("after")
    args = parser.parse_args()
    dump(args) if args.command == "dump" else diff(args)


if __name__ == "__main__":
    main()
