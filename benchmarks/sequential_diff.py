"""Differential test of the sequential loop: whisperctl's ``--chunking sequential`` against faster-whisper's
``WhisperModel.transcribe`` on the same weights, window by window.

Both run in this process on the bundled tiny.en (faster-whisper on the CTranslate2 directory whisperctl converts
from), with the VAD off, English forced, and the same beam size and compute precision (``--precision fp32``:
whisperctl ``--quantize none`` and CTranslate2 ``float32``, where the two should pick the same tokens; ``int8``:
each one's own int8). Each window is logged on both sides: its start, the prompt (previous text), the tokens
kept, the temperature of the kept decode and its mean log-probability. The first window where the two differ is
printed with both sides' tokens, then every window side by side, then each side's WER.

    pip install -e '.[peers]'
    python benchmarks/sequential_diff.py ../shared/speech/TTS/LJ001-0001_to_0032_concat.wav
    python benchmarks/sequential_diff.py FILE --precision int8 --beam 5 --json windows.json
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"


def reference_text(path: Path) -> str | None:
    manifest = SPEECH / "MANIFEST.tsv"
    if manifest.is_file():
        for row in csv.DictReader(manifest.open(encoding="utf-8"), delimiter="\t"):
            if (SPEECH / row["file"]).resolve() == path.resolve():
                return row["reference_text"]
    beside = path.with_suffix(".txt")
    return beside.read_text(encoding="utf-8") if beside.is_file() else None


def faster_whisper_windows(path: Path, model: str, precision: str, beam: int, threads: int) -> tuple[list[dict], str]:
    from faster_whisper import WhisperModel

    from whisperctl import models

    ct2 = models.ct2_source(models.resolve(model))[0]
    fw = WhisperModel(str(ct2), device="cpu", compute_type="float32" if precision == "fp32" else "int8", cpu_threads=threads)
    windows: list[dict] = []
    generate, split = fw.generate_with_fallback, fw._split_segments_by_timestamps

    def logged_generate(encoder_output, prompt, tokenizer, options):
        result, avg_logprob, temperature, ratio = generate(encoder_output, prompt, tokenizer, options)
        sot = prompt.index(tokenizer.sot)
        windows.append(dict(prompt=prompt[1:sot] if sot else [], tokens=list(result.sequences_ids[0]),
                            temperature=temperature, avg_logprob=round(avg_logprob, 4),
                            no_speech=round(result.no_speech_prob, 4), start=None, kept=[]))
        return result, avg_logprob, temperature, ratio

    def logged_split(**kw):
        segments, seek, single = split(**kw)
        windows[-1]["start"] = round(kw["time_offset"], 2)
        windows[-1]["kept"] = [t for s in segments for t in s["tokens"]]
        return segments, seek, single

    fw.generate_with_fallback, fw._split_segments_by_timestamps = logged_generate, logged_split
    segments, _ = fw.transcribe(str(path), language="en", beam_size=beam, vad_filter=False)
    text = "".join(s.text for s in segments)
    return windows, text


def whisperctl_windows(path: Path, model: str, precision: str, beam: int, threads: int) -> tuple[list[dict], str]:
    import whisperctl.sequential as sequential
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.decoding import WindowDecoder

    config = EngineConfig(model=model, chunking="sequential", vad="none", beam_size=beam, threads=threads,
                          quantization="none" if precision == "fp32" else "int8")
    t = Transcriber(config).load()
    windows: list[dict] = []
    decode, window_tokens = WindowDecoder.decode, sequential.window_tokens

    def logged_decode(self, chunks, languages, prompts=None, groups=None):
        results = decode(self, chunks, languages, prompts, groups)
        for r, p in zip(results, prompts or [[] for _ in chunks]):
            windows.append(dict(prompt=list(p)[-(self.loaded.max_length // 2 - 1):], tokens=list(r.tokens),
                                temperature=r.temperature, avg_logprob=round(r.avg_logprob, 4),
                                no_speech=None if r.no_speech_prob is None else round(r.no_speech_prob, 4),
                                silent=r.silent, start=None, kept=[]))
        return results

    def logged_window_tokens(lm, key, kept, start, duration, token_times=None):
        windows[-1]["start"], windows[-1]["kept"] = round(start, 2), list(kept)
        return window_tokens(lm, key, kept, start, duration, token_times)

    WindowDecoder.decode, sequential.window_tokens = logged_decode, logged_window_tokens
    try:
        text = t.transcribe(str(path)).text
    finally:
        WindowDecoder.decode, sequential.window_tokens = decode, window_tokens
    return windows, text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audio", type=Path)
    ap.add_argument("--model", default="tiny.en")
    ap.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    ap.add_argument("--beam", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write both sides' windows here")
    ap.add_argument("--all", action="store_true", help="print every window, not only the first divergent one")
    args = ap.parse_args()

    fw, fw_text = faster_whisper_windows(args.audio, args.model, args.precision, args.beam, args.threads)
    wc, wc_text = whisperctl_windows(args.audio, args.model, args.precision, args.beam, args.threads)
    from whisperctl import models
    from whisperctl.wer import wer

    tok = models.resolve(args.model)
    from transformers import WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast.from_pretrained(models.checkpoint(tok))
    show = lambda ids: tokenizer.decode(ids, decode_with_timestamps=True)  # noqa: E731
    first = None
    for i, (a, b) in enumerate(zip(fw, wc)):
        same = a["start"] == b["start"] and a["kept"] == b["kept"] and a["temperature"] == b["temperature"]
        if not same and first is None:
            first = i
        if args.all or i == first:
            print(f"--- window {i}: faster-whisper start {a['start']} T={a['temperature']} lp={a['avg_logprob']} "
                  f"ns={a['no_speech']} | whisperctl start {b['start']} T={b['temperature']} lp={b['avg_logprob']} "
                  f"ns={b['no_speech']}{' silent' if b.get('silent') else ''}  {'same' if same else 'DIFFERENT'}")
            if not same or args.all:
                print("  prompt same:", a["prompt"] == b["prompt"], len(a["prompt"]), len(b["prompt"]))
                print("  fw:", show(a["tokens"]))
                print("  wc:", show(b["tokens"]))
    print(f"windows: faster-whisper {len(fw)}, whisperctl {len(wc)}; first divergent: {first}")
    ref = reference_text(args.audio)
    if ref:
        print(f"WER faster-whisper {100 * wer([ref], [fw_text]):.2f} %  whisperctl {100 * wer([ref], [wc_text]):.2f} %")
    if args.json:
        args.json.write_text(json.dumps({"faster_whisper": fw, "whisperctl": wc}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
