"""What the VAD removes: the words of each recording that fall in audio a VAD setting drops or cuts.

For every shared recording over 20 s under each condition of benchmarks/degrade.py, the words come from
whisperctl's own no-VAD transcript with word timestamps (``--vad none --timestamps word``; cached as JSON next to
the degraded audio), and for each VAD mode the speech regions it keeps are computed without decoding. A word is
*dropped* when less than a fifth of it lies in kept audio and *cut* when it is partly kept; for each the mean speech
probability Silero gave its frames is printed, so a cause can be told apart (a low probability: the detector; a
high one: padding or joining).

    python benchmarks/vad_loss.py                         # every condition, --vad silero and skip (the default)
    python benchmarks/vad_loss.py --conditions phone,quiet --list   # and list each lost word
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import degrade  # noqa: E402
from accuracy import SPEECH, cpu_line  # noqa: E402

SR = 16000
FRAME = 512


def long_recordings() -> list[tuple[Path, Path | None]]:
    """(recording, the recording the paired conditions put after it): each shared recording over 20 s, paired with
    the next one in the list (another speaker)."""
    import soundfile as sf

    rows = list(csv.DictReader((SPEECH / "MANIFEST.tsv").open(encoding="utf-8"), delimiter="\t"))
    longs = [SPEECH / r["file"] for r in rows if sf.info(str(SPEECH / r["file"])).duration > 20]
    return [(f, longs[(i + 1) % len(longs)]) for i, f in enumerate(longs)]


def words_without_vad(t, path: Path) -> list[tuple[float, float, str]]:
    cache = path.with_suffix(".words.json")
    if cache.exists():
        return [tuple(w) for w in json.loads(cache.read_text())]
    result = t.transcribe(str(path), t.options.replace(vad="none", timestamps="word"))
    words = [(w.start, w.end, w.word) for s in result.segments for w in (s.words or [])]
    cache.write_text(json.dumps(words))
    return words


def kept_mask(path: Path, mode: str, n: int) -> np.ndarray:
    """Which samples of ``path`` (mono, 16 kHz) the VAD mode ``mode`` passes to the decoder."""
    from whisperctl import audio, vad
    from whisperctl.config import DecodeOptions
    from whisperctl.inputs import AudioInput

    opts = DecodeOptions(vad=mode)  # sequential chunking: the speech-only stream, as transcribe decodes it
    stream = vad.speech_only(audio.stream(AudioInput.from_arg(str(path))),
                             vad.params_for(opts.vad_in_effect.value, *opts.vad_params))
    for _ in stream:
        pass
    kept = np.zeros(n, bool)
    for r in stream.time_map.regions:
        kept[r.start:r.end] = True
    return kept


def probabilities(x: np.ndarray) -> np.ndarray:
    from whisperctl import vad

    return vad.SpeechProbabilities().feed(x, final=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conditions", default=",".join(degrade.CONDITIONS))
    ap.add_argument("--modes", default="silero,skip")
    ap.add_argument("--list", action="store_true", help="list each dropped or cut word")
    args = ap.parse_args()

    import torch

    from whisperctl import EngineConfig, Transcriber, audio

    torch.set_num_threads(2)
    t = Transcriber(EngineConfig(threads=2)).load()
    modes = args.modes.split(",")
    print(f"# {cpu_line()}; words from whisperctl --vad none --timestamps word (tiny.en int8)")
    print("| recording | condition | words | " + " | ".join(f"{m}: dropped / cut (mean p) | {m}: audio kept"
                                                          for m in modes) + " |")
    print("|---|---|---|" + "---|---|" * len(modes))
    for first, second in long_recordings():
        for condition in args.conditions.split(","):
            path = degrade.make(condition, first, second)
            x = audio.load(str(path))
            words = words_without_vad(t, path)
            probs = probabilities(x)
            cells, listed = [], []
            for mode in modes:
                kept = kept_mask(path, mode, len(x))
                dropped, cut = [], []
                for a, b, w in words:
                    i, j = int(a * SR), max(int(b * SR), int(a * SR) + 1)
                    share = kept[i:j].mean()
                    p = float(probs[i // FRAME: j // FRAME + 1].mean())
                    if share < 0.2:
                        dropped.append((a, w, p))
                    elif share < 0.999:
                        cut.append((a, w, p))
                mean = lambda items: f"{np.mean([p for *_, p in items]):.2f}" if items else "-"  # noqa: E731
                cells.append(f"{len(dropped)} ({mean(dropped)}) / {len(cut)} ({mean(cut)}) | {100 * kept.mean():.0f} %")
                listed += [f"  {mode} dropped {a:7.2f} s p={p:.2f} {w!r}" for a, w, p in dropped]
                listed += [f"  {mode} cut     {a:7.2f} s p={p:.2f} {w!r}" for a, w, p in cut]
            print(f"| {first.name} | {condition} | {len(words)} | " + " | ".join(cells) + " |", flush=True)
            if args.list:
                print("\n".join(listed), flush=True)


if __name__ == "__main__":
    main()
