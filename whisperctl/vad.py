"""Voice activity detection: where the speech is, so silence is skipped and windows are cut at pauses.

The model is Silero VAD 6 (``silero-vad`` on PyPI, MIT): its weights ship inside the wheel, and are read here
(offline, SHA-256 checked) from its TorchScript archive into a small PyTorch module written from the published
architecture. The ``silero_vad`` package itself is never imported: importing it sets ``torch.set_num_threads(1)``
for the whole process, and its TorchScript model runs one 32 ms frame per call. Silero's frames are independent
up to its LSTM, so here the convolutional front end runs on every frame of a block at once and the LSTM over the
sequence in one call: about 0.1 % of the audio's duration on 2 CPU cores (docs/benchmarks.md), with speech
probabilities equal to the TorchScript model's within 1e-5 (tests/test_vad.py).

From probabilities to regions (:class:`SpeechDetector`, streaming, pure Python over the probabilities):
speech starts where the probability reaches ``threshold`` and ends where it has stayed below
``threshold - 0.15`` for ``min_silence_ms``; regions shorter than ``min_speech_ms`` are dropped; a region is cut at
its least speech-like frame before it outgrows ``max_speech_s``. Each region is widened by ``speech_pad_ms`` on
both sides and overlapping regions are joined.

Two uses, both streaming with bounded memory (the region streams and time maps are :mod:`whisperctl.regions`'):

- :class:`SpeechWindows` (``--chunking vad``): regions merged into windows of at most the chunk length, each
  window the original audio from its first region's start to its last region's end (pauses inside a window
  stay; the audio between windows is skipped), so a cut always falls in a pause and times need no mapping.
- :func:`speech_only` (``--vad silero`` with batched or sequential chunking): the speech regions' audio joined
  into one stream for the usual windowing, with a time map back to the original audio.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import math
import os
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from .audio import SAMPLE_RATE
from .errors import UsageError
from .regions import Region, RegionClamp, RegionsOnly, RegionStream, Tape, merge_into_windows, pad_and_join, record

FRAME = 512  # samples per probability (32 ms), fixed by the model
_CONTEXT = 64  # samples of the previous frame the model sees before each frame
#: SHA-256 of silero-vad 6.2.3's ``data/silero_vad.jit``.
WEIGHTS_SHA256 = "e1122837f4154c511485fe0b9c64455f7b929c96fbb8d79fbdb336383ebd3720"
INSTALL_HINT = "pip install silero-vad==6.2.3 (a whisperctl dependency), or pass --vad none"


@dataclasses.dataclass(frozen=True)
class VadParams:
    threshold: float = 0.5  # speech probability that opens a region
    min_silence_ms: int = 2000  # silence that closes it
    speech_pad_ms: int = 400  # kept on each side of a region
    min_speech_ms: int = 250  # shorter regions are dropped
    max_speech_s: float = float("inf")  # longer regions are cut at their least speech-like frame
    # ``--vad skip`` (the default): the model hears the audio at a steady level (Silero's probabilities fall with
    # the level: a -30 dB recording's speech scores like noise), and the file's head and tail are skipped only when
    # they are as long as a pause that would be skipped inside it.
    skip_only: bool = False


def params_for(mode: str, threshold: float, min_silence_ms: int, speech_pad_ms: int) -> VadParams:
    """The detector's parameters for ``--vad skip`` or ``--vad silero`` (values from ``DecodeOptions.vad_params``)."""
    return VadParams(threshold=threshold, min_silence_ms=min_silence_ms, speech_pad_ms=speech_pad_ms,
                     skip_only=mode == "skip")


#: The level the detector hears: the loud frames' RMS (the 95th percentile of every frame's so far) is brought to
#: -20 dBFS, with at most +40 dB of gain (so hum or dither in digital silence stays faint); louder audio is left as
#: it is.
TARGET_RMS = 0.1
MAX_GAIN = 100.0


class Leveller:
    """The gain the VAD applies to each block (``level=True``). The level is the 95th percentile of the RMS of every
    32 ms frame so far (a histogram in 0.5 dB steps: constant memory), so one cough or door does not set it, a quiet
    recording is heard at speech level, and a block's gain depends only on the audio up to its end (streaming)."""

    FLOOR_DB, STEP_DB = -120.0, 0.5

    def __init__(self):
        self.counts = np.zeros(int(-self.FLOOR_DB / self.STEP_DB) + 1, dtype=np.int64)

    def level(self) -> float:
        total = self.counts.sum()
        if not total:
            return 0.0
        i = int(np.searchsorted(np.cumsum(self.counts), 0.95 * total))
        return 10 ** ((self.FLOOR_DB + i * self.STEP_DB) / 20)

    def __call__(self, block: np.ndarray) -> np.ndarray:
        n = len(block) // FRAME
        if n:
            rms = np.sqrt(np.mean(block[: n * FRAME].astype(np.float64).reshape(n, FRAME) ** 2, axis=1))
            db = 20 * np.log10(np.maximum(rms, 1e-6))
            bins = np.clip(((db - self.FLOOR_DB) / self.STEP_DB).astype(int), 0, len(self.counts) - 1)
            self.counts += np.bincount(bins, minlength=len(self.counts))
        level = self.level()
        gain = min(MAX_GAIN, TARGET_RMS / level) if level > 0 else MAX_GAIN
        return (block * np.float32(gain)) if gain > 1.0 else block


# ----------------------------------------------------------------------------------------------- the model
def weights_path() -> str | None:
    """Where silero-vad's TorchScript model lies, found without importing the package (None: not installed)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "silero_vad.jit")
    return path if os.path.isfile(path) else None


def available() -> bool:
    return weights_path() is not None


@functools.lru_cache(maxsize=1)
def load_model():  # -> SileroVad
    """Silero VAD's 16 kHz weights, taken from the TorchScript archive the package's own loader uses (the
    wheel's ``silero_vad_16k.safetensors`` holds other weights), verified by SHA-256 first."""
    import io

    import torch

    path = weights_path()
    if path is None:
        raise UsageError(f"--vad silero: silero-vad is not installed. {INSTALL_HINT}")
    with open(path, "rb") as fh:
        data = fh.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise UsageError(f"--vad silero: {path} has SHA-256 {digest[:12]}…, not silero-vad 6.2.3's. {INSTALL_HINT}")
    scripted = torch.jit.load(io.BytesIO(data), map_location="cpu").state_dict()
    names = {"stft.forward_basis_buffer": "stft_conv.weight", "decoder.rnn.weight_ih": "lstm.weight_ih_l0",
             "decoder.rnn.weight_hh": "lstm.weight_hh_l0", "decoder.rnn.bias_ih": "lstm.bias_ih_l0",
             "decoder.rnn.bias_hh": "lstm.bias_hh_l0", "decoder.decoder.2.weight": "final_conv.weight",
             "decoder.decoder.2.bias": "final_conv.bias"}
    for i in range(4):
        for kind in ("weight", "bias"):
            names[f"encoder.{i}.reparam_conv.{kind}"] = f"conv{i + 1}.{kind}"
    model = _module()()
    model.load_state_dict({new: scripted[f"_model.{old}"] for old, new in names.items()})
    return model.eval()


@functools.lru_cache(maxsize=1)
def _module():
    import torch
    from torch import nn

    class SileroVad(nn.Module):
        """Silero VAD 6's 16 kHz network. ``forward`` takes frames with their context, (n, 64 + 512), and the
        LSTM state, and returns each frame's speech probability and the new state."""

        def __init__(self):
            super().__init__()
            self.stft_conv = nn.Conv1d(1, 258, kernel_size=256, stride=128, bias=False)  # a learned STFT
            self.conv1 = nn.Conv1d(129, 128, 3, padding=1)
            self.conv2 = nn.Conv1d(128, 64, 3, stride=2, padding=1)
            self.conv3 = nn.Conv1d(64, 64, 3, stride=2, padding=1)
            self.conv4 = nn.Conv1d(64, 128, 3, padding=1)
            self.lstm = nn.LSTM(128, 128)
            self.final_conv = nn.Conv1d(128, 1, 1)

        def features(self, frames: torch.Tensor) -> torch.Tensor:
            x = nn.functional.pad(frames, (0, 64), mode="reflect").unsqueeze(1)
            x = self.stft_conv(x)
            x = torch.sqrt(x[:, :129] ** 2 + x[:, 129:] ** 2)
            for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
                x = torch.relu(conv(x))
            return x.squeeze(-1)  # (n, 128): one vector per frame

        def forward(self, frames: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
            feats = self.features(frames)  # frames are independent up to here: all of a block at once
            out, state = self.lstm(feats.unsqueeze(1), state)  # (frames, batch 1, 128), state (h, c)
            logits = self.final_conv(torch.relu(out.squeeze(1)).unsqueeze(-1)).squeeze(-1).squeeze(-1)
            return torch.sigmoid(logits), state

    return SileroVad


class SpeechProbabilities:
    """Streams blocks of 16 kHz samples into per-frame speech probabilities, carrying the model's state. ``call``
    runs each forward pass (the server hands them to the thread that runs its model, see
    :class:`whisperctl.serve.batcher.ModelThread`)."""

    def __init__(self, call: Callable[[Callable[[], Any]], Any] | None = None):
        self.model = load_model()
        self._call = call
        self._state = None
        self._context = np.zeros(_CONTEXT, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)

    def feed(self, block: np.ndarray, final: bool = False) -> np.ndarray:
        import torch

        data = np.concatenate([self._rest, block]) if len(self._rest) else np.asarray(block, dtype=np.float32)
        n = len(data) // FRAME
        if final and len(data) % FRAME:
            data = np.concatenate([data, np.zeros(FRAME - len(data) % FRAME, dtype=np.float32)])
            n += 1
        self._rest = data[n * FRAME:].copy()
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        body = data[: n * FRAME]
        with_context = np.concatenate([self._context, body])
        idx = np.arange(n)[:, None] * FRAME + np.arange(FRAME + _CONTEXT)[None, :]
        frames = torch.from_numpy(with_context[idx])
        self._context = body[-_CONTEXT:].copy()
        state = self._state

        def forward() -> tuple[Any, Any]:
            with torch.inference_mode():
                return self.model(frames, state)

        probs, self._state = self._call(forward) if self._call is not None else forward()
        return probs.numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------------- probabilities → regions
class SpeechDetector:
    """Turns per-frame probabilities into speech regions (unpadded, in samples) as soon as each one closes."""

    def __init__(self, params: VadParams):
        self.p = params
        self.off = max(params.threshold - 0.15, 0.01)
        self.min_silence = math.ceil(params.min_silence_ms * SAMPLE_RATE / 1000 / FRAME)  # frames
        self.min_speech = params.min_speech_ms * SAMPLE_RATE / 1000
        self.max_frames = int(params.max_speech_s * SAMPLE_RATE / FRAME) if np.isfinite(params.max_speech_s) else None
        self.frame = 0  # frames seen
        self.start: int | None = None  # frame where the open region starts
        self.last_speech = 0  # frame after the last frame >= off in the open region
        self.probs: list[float] = []  # the open region's probabilities (to cut it at max length)

    def feed(self, probs: Sequence[float]) -> list[Region]:
        out: list[Region] = []
        for p in probs:
            p = float(p)
            if self.start is None:
                if p >= self.p.threshold:
                    self.start, self.last_speech, self.probs = self.frame, self.frame + 1, [p]
            else:
                self.probs.append(p)
                if p >= self.off:
                    self.last_speech = self.frame + 1
                elif self.frame + 1 - self.last_speech >= self.min_silence:
                    self._close(self.last_speech, out)
                if self.start is not None and self.max_frames and self.frame + 1 - self.start >= self.max_frames:
                    self._cut(out)
            self.frame += 1
        return out

    def finish(self) -> list[Region]:
        out: list[Region] = []
        if self.start is not None:
            self._close(self.last_speech, out)
        return out

    def _close(self, end_frame: int, out: list[Region]) -> None:
        region = Region(self.start * FRAME, end_frame * FRAME)
        if region.end - region.start >= self.min_speech:
            out.append(region)
        self.start, self.probs = None, []

    def _cut(self, out: list[Region]) -> None:
        """Cut the open region at its least speech-like frame in its second half; the rest stays open."""
        probs = np.asarray(self.probs)
        half = len(probs) // 2
        smooth = np.convolve(np.pad(probs, 2, mode="edge"), np.ones(5) / 5, mode="valid")  # 160 ms mean
        cut = half + int(np.argmin(smooth[half:]))
        start = self.start
        out.append(Region(start * FRAME, (start + cut) * FRAME))
        self.start, self.probs = start + cut, self.probs[cut:]
        if self.last_speech < self.start:
            self.last_speech = self.start


# ------------------------------------------------------------------------------------------------- streams
class _Scan:
    """The VAD's scan (see :mod:`whisperctl.regions`): blocks → (block, padded speech regions settled by it).

    A padded region is settled when no later region can join it: it ends more than a pad before where the next
    region could start (the detector's open region, or the current position)."""

    def __init__(self, params: VadParams, probabilities=None, call: Callable[[Callable[[], Any]], Any] | None = None):
        self.probs = probabilities if probabilities is not None else SpeechProbabilities(call)  # (a fake, in tests)
        self.detector = SpeechDetector(params)
        self.skip_only = params.skip_only
        self.leveller = Leveller() if params.skip_only else None
        self.pad = int(params.speech_pad_ms * SAMPLE_RATE / 1000)
        # skip_only: a head or tail shorter than a skippable pause is kept (the regions reach the file's edges)
        self.edge = self.detector.min_silence * FRAME if params.skip_only else 0
        self.samples = 0
        self.found: list[Region] = []  # every settled region (for the record: a few per minute of speech)
        self.growing: Region | None = None  # the last padded region, which a later one may still join
        self.gaps: list[int] = []  # the middle of each pause between two speech regions (unpadded), in order
        self._last_end: int | None = None  # end of the last unpadded region

    def run(self, blocks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, list[Region]]]:
        for block in blocks:
            block = np.asarray(block, dtype=np.float32)
            self.samples += len(block)
            heard = self.leveller(block) if self.leveller is not None else block
            yield block, self._settle(self.detector.feed(self.probs.feed(heard)), final=False)
        tail = self.detector.feed(self.probs.feed(np.zeros(0, np.float32), final=True)) + self.detector.finish()
        yield np.zeros(0, np.float32), self._settle(tail, final=True)

    def _settle(self, closed: list[Region], final: bool) -> list[Region]:
        for r in closed:
            if self._last_end is not None:
                self.gaps.append((self._last_end + r.start) // 2)  # a cut inside long speech: its cut frame
            self._last_end = r.end
        out: list[Region] = []
        if self.skip_only:
            closed = self._keep_short_edges(closed, final)
        for r in pad_and_join(closed, self.pad, self.samples if final else None):
            if self.growing is not None and r.start <= self.growing.end:
                self.growing = Region(self.growing.start, max(self.growing.end, r.end))
            else:
                if self.growing is not None:
                    out.append(self.growing)
                self.growing = r
        if self.growing is not None:
            if final or self.growing.end < self.next_start():
                out.append(Region(self.growing.start, min(self.growing.end, self.samples)))
                self.growing = None
        self.found.extend(out)
        return out

    def _keep_short_edges(self, closed: list[Region], final: bool) -> list[Region]:
        """``--vad skip``: the first region reaches back to the file's start, and the last (at the end) forward to its
        end, when the stretch between is shorter than a skippable pause; an input shorter than one is kept whole."""
        first = not self.found and self.growing is None
        if closed and first and closed[0].start < self.edge:
            closed = [Region(0, closed[0].end)] + closed[1:]
        if final and closed and self.samples - closed[-1].end < self.edge:
            closed = closed[:-1] + [Region(closed[-1].start, self.samples)]
        if final and not closed and first and self.samples < self.edge:
            closed = [Region(0, self.samples)]
        return closed

    def next_start(self) -> int:
        """The earliest sample a region not yet found may start at (padded)."""
        det = self.detector
        start = (det.start if det.start is not None else det.frame) * FRAME
        if self.skip_only and not self.found and self.growing is None and start < self.edge:
            return 0  # the head stays if speech starts within it
        return max(0, start - self.pad)

    def record(self) -> dict:
        return record(self.found, self.samples, by="skip" if self.skip_only else "silero")


class SpeechWindows(RegionStream):
    """``--chunking vad``: the windows to decode, each the original audio of one or more speech regions, at most
    ``chunk_s`` long, cut only in pauses. Iterate once; then ``duration`` and ``record()`` describe the file."""

    def __init__(self, blocks: Iterable[np.ndarray], chunk_s: float, params: VadParams,
                 call: Callable[[Callable[[], Any]], Any] | None = None):
        self._blocks = blocks
        self.max_samples = int(chunk_s * SAMPLE_RATE)
        pad_s = params.speech_pad_ms / 1000
        # the detector cuts a region before it and its pads outgrow a window
        self._scan = _Scan(dataclasses.replace(params, max_speech_s=max(chunk_s - 2 * pad_s, chunk_s / 2)), call=call)
        self.time_map = RegionClamp(self._scan.found)  # window times are original times

    def __iter__(self) -> Iterator:
        from .longform import Window

        tape, scan = Tape(), self._scan
        span: Region | None = None  # the window being filled
        index = 0
        for block, settled in scan.run(self._blocks):
            tape.append(block)
            for region in settled:
                for part in merge_into_windows([region], self.max_samples):
                    if span is not None and part.end - span.start <= self.max_samples:
                        span = Region(span.start, part.end)
                        continue
                    if span is not None:
                        yield Window(index, span.start / SAMPLE_RATE, tape.take(span.start, span.end))
                        index += 1
                    span = part
            later = scan.growing.start if scan.growing is not None else scan.next_start()
            if span is not None and later + scan.pad - span.start > self.max_samples:
                yield Window(index, span.start / SAMPLE_RATE, tape.take(span.start, span.end))  # cannot grow
                index += 1
                span = None
            tape.drop_before(min(later, span.start if span is not None else later))
        if span is not None:
            yield Window(index, span.start / SAMPLE_RATE, tape.take(span.start, span.end))


def speech_only(blocks: Iterable[np.ndarray], params: VadParams, probabilities=None,
                call: Callable[[Callable[[], Any]], Any] | None = None) -> RegionsOnly:
    """``--vad silero`` with batched or sequential chunking: the speech regions' audio as one stream, with the
    time map back to the original audio. A region's audio is passed on once certain: the detector's cut at 30 s
    bounds how long that waits, so memory stays flat. ``probabilities``: the per-frame source (default: Silero).
    """
    scan = _Scan(dataclasses.replace(params, max_speech_s=min(params.max_speech_s, 30.0)), probabilities, call)
    return RegionsOnly(blocks, scan, snap=scan.pad + SAMPLE_RATE // 2)  # the padding and Whisper's slack
