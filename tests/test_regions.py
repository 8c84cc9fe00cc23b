"""``--clip-timestamps``: the clips' audio streamed and mapped back (pure), and transcription of one clip of a file."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import EXAMPLES, run_cli
from whisperctl.config import DecodeOptions
from whisperctl.regions import SAMPLE_RATE, Clips, Region, clips_only

SR = SAMPLE_RATE


def _blocks(audio: np.ndarray, size: int = 1000):
    return (audio[i:i + size] for i in range(0, len(audio), size))


def test_clips_pass_only_their_audio_and_map_times_back():
    audio = np.arange(2 * SR, dtype=np.float32)  # each sample holds its own index
    stream = clips_only(_blocks(audio), [(0.1, 0.2), (0.5, 0.75), (1.5, math.inf)])
    joined = np.concatenate(list(stream))
    expected = np.concatenate([audio[1600:3200], audio[8000:12000], audio[24000:]])
    assert np.array_equal(joined, expected)
    assert stream.time_map(0.05) == pytest.approx(0.15)
    assert stream.time_map(0.1 + 0.01) == pytest.approx(0.51)  # 10 ms into the second clip
    assert stream.duration == pytest.approx(2.0)
    record = stream.record()
    assert record["by"] == "clip_timestamps" and record["regions"] == [[0.1, 0.2], [0.5, 0.75], [1.5, 2.0]]
    assert record["skipped_share"] == pytest.approx(1 - 0.85 / 2.0)


def test_clips_past_the_end_are_empty_and_a_long_clip_streams():
    audio = np.ones(SR, dtype=np.float32)
    stream = clips_only(_blocks(audio), [(0.5, 3.0), (4.0, 5.0)])
    assert sum(len(b) for b in stream) == SR // 2
    assert stream.record()["regions"] == [[0.5, 1.0]]
    # a clip to the end of a long stream passes its audio on as it is read: the scan never holds it back
    scan = Clips([(0.0, math.inf)])
    needed_from = [scan.next_start() for _ in scan.run(_blocks(np.zeros(60 * SR, np.float32), 16_000))]
    assert needed_from[:-1] == [(i + 1) * 16_000 for i in range(60)] and scan.found == [Region(0, 60 * SR)]


def test_clip_timestamps_parse_as_openai_whisper_writes_them():
    assert DecodeOptions(clip_timestamps="0,10.5,20,30").clips == [(0.0, 10.5), (20.0, 30.0)]
    assert DecodeOptions(clip_timestamps="60").clips == [(60.0, math.inf)]
    assert DecodeOptions(clip_timestamps=[1, 2]).clip_timestamps == (1.0, 2.0)


@pytest.mark.parametrize("chunking", ["batched", "sequential"])
def test_only_the_clip_is_transcribed_at_its_original_time(tmp_path, capsys, chunking):
    import soundfile as sf

    speech, sr = sf.read(str(EXAMPLES / "short.wav"), dtype="float32")
    gap = (np.random.default_rng(5).standard_normal(6 * sr) * 0.003).astype(np.float32)
    audio = np.concatenate([speech, gap, speech, gap])
    sf.write(str(tmp_path / "two.wav"), audio, sr)
    b_start, b_end = (len(speech) + len(gap)) / sr, (2 * len(speech) + len(gap)) / sr
    words = {}
    for name, clips in (("whole", None), ("second", f"{b_start:.3f},{b_end:.3f}"), ("open", f"{b_start:.3f}")):
        out = tmp_path / name
        flags = ["--clip-timestamps", clips] if clips else []
        code, _, err = run_cli(["transcribe", tmp_path / "two.wav", "-o", out, "-f", "json", "-q", "--chunking",
                                chunking, *flags], capsys)
        assert code == 0, err
        data = json.loads((out / "two.json").read_text())
        words[name] = len(data["text"].split())
        assert data["duration"] == pytest.approx(len(audio) / sr, abs=0.01)
        if clips:
            assert data["speech"]["by"] == "clip_timestamps"
            assert data["speech"]["regions"][0][0] == pytest.approx(b_start, abs=0.001)
            clip_end = b_end if name == "second" else len(audio) / sr  # the open clip runs to the end
            for seg in data["segments"]:  # in the clip, on the original file's clock (Whisper's slack allowed)
                assert b_start - 0.5 <= seg["start"] and seg["end"] <= clip_end + 0.5, seg
    # one copy of the sentence, not two: about half the words of the whole file
    assert 0.3 <= words["second"] / words["whole"] <= 0.7 and 0.3 <= words["open"] / words["whole"] <= 0.7, words
