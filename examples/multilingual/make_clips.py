"""Re-create the non-English example clips with eSpeak NG (how they were made; not needed to use them).

    pip install espeakng-loader==0.2.4 soundfile numpy
    python examples/multilingual/make_clips.py

``espeakng-loader`` ships libespeak-ng 1.52 and its voice data in a wheel, so no system package is needed; the
library is called through ctypes (speak_lib.h: synchronous output, a callback collecting 16-bit samples). Each
clip is one row of clips.tsv: file, language, eSpeak voice, speed (words per minute), the text spoken and an
English translation written by hand (the reference for ``--task translate``). The voices and speeds were chosen
as those the multilingual base model hears most clearly (eSpeak's default French and German voices are hard for
it: it detects the language but garbles words).
"""

from __future__ import annotations

import csv
import ctypes
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
AUDIO_OUTPUT_SYNCHRONOUS, ESPEAK_RATE, ESPEAK_CHARS_UTF8, POS_CHARACTER = 2, 1, 1, 1


def synthesizer():
    import espeakng_loader

    lib = ctypes.CDLL(espeakng_loader.get_library_path())
    data = Path(espeakng_loader.get_data_path())
    rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, str(data.parent).encode(), 0)
    if rate <= 0:
        sys.exit(f"espeak_Initialize failed ({rate})")
    chunks: list[np.ndarray] = []
    callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

    def collect(wav, n, _events):
        if n > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0

    callback = callback_type(collect)
    lib.espeak_SetSynthCallback(callback)

    def say(voice: str, speed: int, text: str) -> np.ndarray:
        chunks.clear()
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            sys.exit(f"eSpeak has no voice {voice!r}")
        lib.espeak_SetParameter(ESPEAK_RATE, speed, 0)
        data = text.encode("utf-8")
        lib.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        lib.espeak_Synchronize()
        return np.concatenate(chunks).astype(np.float32) / 32768.0

    say.callback = callback  # keep the ctypes callback alive as long as the function
    return say, rate


def main() -> None:
    say, rate = synthesizer()
    with (HERE / "clips.tsv").open(encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            samples = say(row["voice"], int(row["speed"]), row["text"])
            sf.write(HERE / row["file"], samples, rate, subtype="PCM_16")
            print(f"{row['file']}: {len(samples) / rate:.1f} s")


if __name__ == "__main__":
    main()
