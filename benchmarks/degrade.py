"""Degraded copies of the shared recordings: the conditions under which a VAD default lost words on held-out speech.

Each condition turns one or two 16 kHz recordings into one new recording (written once as WAV under a temporary
folder, seeded, so every run hears the same audio):

  clean         the recording as it is (resampled to 16 kHz)
  phone         a phone line: band-passed to 300-3400 Hz through 8 kHz and back
  phone-snr20   phone band + white noise 20 dB below the speech's RMS
  phone-snr10   phone band + white noise 10 dB below
  quiet         -30 dB of gain (a far or quiet microphone)
  two-speakers  two recordings one after the other with a 0.4 s pause, the second 6 dB quieter (two people taking
                turns on one microphone)
  two-channels  the same turns on two channels (the first speaker on the left, the second on the right, each
                channel silent while the other talks, as a call recorder writes them)

Used by benchmarks/accuracy.py (``--conditions``) and benchmarks/vad_loss.py.
"""

from __future__ import annotations

import tempfile
import zlib
from pathlib import Path

import numpy as np

SR = 16000
CONDITIONS = ("clean", "phone", "phone-snr20", "phone-snr10", "quiet", "two-speakers", "two-channels")
PAIRED = ("two-speakers", "two-channels")
_OUT = Path(tempfile.gettempdir()) / "whisperctl-degraded"


def phone_band(x: np.ndarray) -> np.ndarray:
    from scipy.signal import butter, resample_poly, sosfiltfilt

    band = butter(6, (300, 3400), btype="bandpass", fs=8000, output="sos")
    return resample_poly(sosfiltfilt(band, resample_poly(x, 1, 2)), 2, 1)


def with_noise(x: np.ndarray, snr_db: float, seed: str) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x**2))) or 1e-4
    noise = np.random.default_rng(zlib.crc32(seed.encode())).normal(0, rms * 10 ** (-snr_db / 20), len(x))
    return np.clip(x + noise, -1, 1).astype(np.float32)


def make(condition: str, first: Path, second: Path | None = None) -> Path:
    """The recording ``first`` (and, for the paired conditions, ``second`` after it) under ``condition``, as a WAV
    path (built once)."""
    import soundfile as sf

    from whisperctl import audio

    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; known: {', '.join(CONDITIONS)}")
    if condition in PAIRED and second is None:
        raise ValueError(f"{condition} needs two recordings")
    _OUT.mkdir(exist_ok=True)
    name = first.stem + (f"+{second.stem}" if condition in PAIRED else "")
    path = _OUT / f"{name}.{condition}.wav"
    if path.exists():
        return path
    x = audio.load(str(first)).astype(np.float32)
    if condition == "phone":
        x = phone_band(x)
    elif condition.startswith("phone-snr"):
        x = with_noise(phone_band(x).astype(np.float32), float(condition[len("phone-snr"):]), first.name)
    elif condition == "quiet":
        x = x * 10 ** (-30 / 20)
    elif condition in PAIRED:
        y = audio.load(str(second)).astype(np.float32) * 10 ** (-6 / 20)
        pause = np.zeros(int(0.4 * SR), np.float32)
        if condition == "two-speakers":
            x = np.concatenate([x, pause, y])
        else:
            left = np.concatenate([x, pause, np.zeros_like(y)])
            right = np.concatenate([np.zeros_like(x), pause, y])
            x = np.stack([left, right], axis=1)
    tmp = path.with_suffix(".part.wav")
    sf.write(tmp, x, SR, subtype="FLOAT")
    tmp.replace(path)
    return path
