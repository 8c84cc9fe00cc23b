"""How well whisperctl's VAD finds the speech of the S1/S2 workloads, per setting, without decoding.

S1/S2 (built by cpu_vs_faster_whisper.py) are 32 LJ clips at known places between 2-60 s pauses (digital silence;
white/pink noise 20 dB below the speech). For each setting: the share of clip audio inside the regions kept
(speech recall: what decoding can still see), the share of the file kept (what decoding costs), the number of
regions, and the VAD's own time as a share of the audio's duration (the model, the detector and the stream).

    python benchmarks/vad_regions.py            # the grid below, on s1 and s2, 2 threads
    python benchmarks/vad_regions.py --defaults # --vad skip and --vad silero as they ship
"""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import cpu_vs_faster_whisper as workloads  # noqa: E402


def main() -> None:
    only_defaults = "--defaults" in sys.argv
    import soundfile as sf
    import torch

    from whisperctl import vad

    torch.set_num_threads(2)
    scratch = Path(tempfile.gettempdir()) / "whisperctl-bench"  # where cpu_vs_faster_whisper.py builds them
    scratch.mkdir(exist_ok=True)
    print(f"CPU: {workloads.cpu_description()}; torch threads {torch.get_num_threads()}")
    print("| workload | mode | threshold | min silence ms | pad ms | speech recall | audio kept | regions | VAD time / audio |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in ("s1", "s2"):
        (path,), _ = workloads.vad_workload(name, workloads.manifest(), scratch)
        spans = json.loads(path.with_suffix(".spans.json").read_text())
        audio, sr = sf.read(str(path), dtype="float32")
        truth = np.zeros(len(audio), bool)
        for a, b in spans:
            truth[int(a * sr):int(b * sr)] = True
        grid = [("silero", *p) for p in itertools.product((0.35, 0.5), (500, 1000, 2000), (200, 400))]
        shipped = [("skip", 0.3, 4000, 1000), ("silero", 0.5, 2000, 400)]
        for mode, threshold, silence, pad in shipped if only_defaults else grid:
            params = vad.params_for(mode, threshold, silence, pad)
            t0 = time.perf_counter()
            stream = vad.speech_only((audio[i:i + 160_000] for i in range(0, len(audio), 160_000)), params)
            for _ in stream:
                pass
            elapsed = time.perf_counter() - t0
            kept = np.zeros(len(audio), bool)
            for r in stream.time_map.regions:
                kept[r.start:r.end] = True
            recall = (kept & truth).sum() / truth.sum()
            print(f"| {name} | {mode} | {threshold} | {silence} | {pad} | {100 * recall:.2f} % | {100 * kept.mean():.1f} % | "
                  f"{len(stream.time_map.regions)} | {100 * elapsed / (len(audio) / sr):.3f} % |", flush=True)


if __name__ == "__main__":
    main()
