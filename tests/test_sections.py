"""Sections of a long input (whisperctl.sections) and the pauses they are cut at: fake streams, no model; then
one real file cut into sections through the engine."""

from pathlib import Path

import numpy as np
import pytest

from whisperctl.regions import Region, TimeMap
from whisperctl.sections import Sections
from whisperctl.vad import VadParams

SR = 16_000
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


class FakeSpeech:
    """Blocks of a stream whose samples count up from 0, and the pauses known once the stream is read past them."""

    def __init__(self, seconds: float, pauses_s: list[float], block_s: float = 7.0, lag_s: float = 0.0):
        self.audio = np.arange(int(seconds * SR), dtype=np.float32)
        self.block = int(block_s * SR)
        self.pauses = [int(p * SR) for p in pauses_s]
        self.lag = int(lag_s * SR)  # a pause is known only this long after it was read (the VAD's cut)
        self.read = 0

    def __iter__(self):
        for i in range(0, len(self.audio), self.block):
            self.read = min(i + self.block, len(self.audio))
            yield self.audio[i : i + self.block]
        self.read = len(self.audio) + self.lag

    def cut_points(self) -> list[int]:
        return [p for p in self.pauses if p + self.lag <= self.read]


def all_sections(stream, min_s: float):
    sections, out = Sections(stream, min_s), []
    while (section := sections.next()) is not None:
        out.append((section.index, section.offset, np.concatenate(list(section.blocks))))
    assert sections.exhausted and sections.next() is None
    return out


@pytest.mark.parametrize("lag_s", [0.0, 25.0])
def test_sections_cut_at_the_first_pause_after_the_minimum(lag_s):
    stream = FakeSpeech(200.0, [20.0, 45.0, 70.0, 75.0, 150.0, 190.0], lag_s=lag_s)
    out = all_sections(stream, 60.0)
    assert [(i, off / SR) for i, off, _ in out] == [(0, 0.0), (1, 70.0), (2, 150.0)]
    for _, off, samples in out:
        assert samples[0] == off  # each section's audio starts where it says
    assert np.array_equal(np.concatenate([s for _, _, s in out]), stream.audio)  # nothing lost or doubled


def test_no_pause_after_the_minimum_leaves_one_section_and_a_short_tail_stays():
    assert [off / SR for _, off, _ in all_sections(FakeSpeech(100.0, [30.0]), 60.0)] == [0.0]
    assert [(off / SR, len(s) / SR) for _, off, s in all_sections(FakeSpeech(65.0, [61.0]), 60.0)] == [(0.0, 61.0), (61.0, 4.0)]


def test_a_stream_without_pauses_or_sections_off_is_one_lazy_section():
    from whisperctl.regions import WholeStream

    whole = WholeStream([np.zeros(SR, np.float32)] * 3)
    section = Sections(whole, 60.0).next()
    assert section.blocks is whole  # read as the loop needs it, not held
    stream = FakeSpeech(200.0, [70.0])
    off = Sections(stream, 0.0)
    assert off.next().blocks is stream and off.next() is None


def test_empty_stream_has_no_section():
    assert all_sections(FakeSpeech(0.0, []), 60.0) == []


def test_time_map_places_original_samples_in_the_joined_audio():
    tm = TimeMap()
    tm.add(Region(1000, 5000))
    assert tm.to_joined(7000) is None  # in a pause whose next region is not mapped yet
    tm.add(Region(8000, 9000))
    assert [tm.to_joined(s) for s in (1000, 4999, 6000, 8500)] == [0, 3999, 4000, 4500]
    assert tm.length == 5000


def _three_sentences(tmp_path):
    """examples/short.wav three times, 3 s of faint noise between: (path, the text, each copy's start in s)."""
    import soundfile as sf

    speech, sr = sf.read(str(EXAMPLES / "short.wav"), dtype="float32")
    gap = (np.random.default_rng(3).standard_normal(3 * sr) * 0.002).astype(np.float32)
    audio = np.concatenate([speech, gap, speech, gap, speech])
    path = tmp_path / "three.wav"
    sf.write(str(path), audio, sr)
    return path, (EXAMPLES / "short.txt").read_text().strip(), [i * (len(speech) + len(gap)) / sr for i in range(3)]


def test_the_vad_stream_offers_the_middle_of_each_pause(tmp_path):
    from whisperctl import audio, vad
    from whisperctl.inputs import AudioInput

    path, _, starts = _three_sentences(tmp_path)
    stream = vad.speech_only(audio.stream(AudioInput.from_arg(str(path))), vad.VadParams())
    joined = sum(len(b) for b in stream)
    cuts = stream.cut_points()
    assert len(cuts) == 2 and all(0 < c < joined for c in cuts)
    # each cut lies in the pause before a copy (mapped back to the original file's time)
    for cut, start in zip(cuts, starts[1:]):
        assert start - 3.0 <= stream.time_map(cut / SR) <= start + 0.05


@pytest.mark.slow  # make test stays under 10 minutes on 2 cores; `pytest -m slow` runs it
def test_a_file_cut_into_sections_reads_as_the_file_decoded_whole(tmp_path):
    """Three sections (one per sentence) in one batch: the text in order, times rising and inside each copy.
    (``--vad silero``: its regions end at the 3 s pauses; the default's skip only at pauses of 4 s or more.)"""
    from whisperctl import EngineConfig, Transcriber
    from whisperctl.wer import wer

    path, text, starts = _three_sentences(tmp_path)
    t = Transcriber(EngineConfig(vad="silero")).load()
    whole = t.transcribe(str(path), t.options.replace(section_length_s=0))
    cut = t.transcribe(str(path), t.options.replace(section_length_s=1))
    reference = " ".join([text] * 3)
    # (0.1: on an AVX-512 VNNI Xeon the int8 kernels move three of the 51 words of this espeak voice, 0.333 -> 0.392;
    # a lost or doubled sentence costs 0.3 and more)
    assert wer([reference], [cut.text]) <= wer([reference], [whole.text]) + 0.1
    ends = [s.end for s in cut.segments]
    assert ends == sorted(ends) and cut.duration == whole.duration
    for i, start in enumerate(starts):  # each copy's words are transcribed within it, once
        inside = [s for s in cut.segments if start - 0.5 <= s.start < start + 8.0]
        assert 0.7 <= len(" ".join(s.text for s in inside).split()) / len(text.split()) <= 1.3, (i, inside)
