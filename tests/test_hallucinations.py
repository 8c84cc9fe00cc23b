"""openai-whisper's hallucination-silence rule (pure, over segments with words), and how the filter streams."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import EXAMPLES, run_cli
from whisperctl.hallucinations import SilenceFilter, is_anomaly, word_anomaly_score
from whisperctl.results import Segment, Word


def _segment(start: float, words: int, probability: float = 0.9, word_s: float = 0.4) -> Segment:
    ws = [Word(round(start + i * word_s, 3), round(start + (i + 1) * word_s, 3), f" w{i}", probability)
          for i in range(words)]
    return Segment(start, ws[-1].end if ws else start, "".join(w.word for w in ws), words=ws)


def _invented(start: float) -> Segment:
    """What Whisper writes on silence: two improbable words."""
    return _segment(start, 2, probability=0.05)


def test_words_score_by_probability_and_duration():
    assert word_anomaly_score(Word(0.0, 0.4, " yes", 0.9)) == 0
    assert word_anomaly_score(Word(0.0, 0.4, " yes", 0.1)) == 1
    assert word_anomaly_score(Word(0.0, 0.033, " a", 0.9)) == pytest.approx(1.5)
    assert word_anomaly_score(Word(0.0, 5.0, " long", 0.9)) == pytest.approx(3.0)
    assert is_anomaly(_invented(0.0)) and not is_anomaly(_segment(0.0, 5))
    # punctuation is not a word, and the first eight words decide
    seg = _segment(0.0, 9)
    seg.words = [Word(0.0, 0.01, " .", 0.01)] + seg.words[:8] + [Word(9.0, 9.01, " x", 0.01)]
    assert not is_anomaly(seg)
    assert not is_anomaly(None) and not is_anomaly(Segment(0.0, 1.0, " [no words]"))


def test_invented_text_surrounded_by_silence_is_dropped_and_speech_is_kept():
    speech1, invented, speech2 = _segment(1.0, 5), _invented(20.0), _segment(40.0, 5)
    f = SilenceFilter(threshold=2.0)
    assert f.feed([speech1]) == [speech1]
    assert f.feed([invented]) == []  # held: its fate waits for the next segment with words
    assert f.feed([speech2]) == [speech2] and f.dropped == 1
    assert f.finish(60.0) == []


def test_an_improbable_segment_next_to_speech_is_kept():
    speech1, unsure, speech2 = _segment(1.0, 5), _invented(3.5), _segment(5.0, 5)
    f = SilenceFilter(threshold=2.0)
    assert f.feed([speech1, unsure, speech2]) == [speech1, unsure, speech2] and f.dropped == 0
    # silence before, but speech right after: kept too
    f = SilenceFilter(threshold=2.0)
    lonely_before = _invented(20.0)
    assert f.feed([speech1, lonely_before, _segment(21.0, 3)])[:2] == [speech1, lonely_before]


def test_runs_of_invented_segments_go_and_the_end_of_the_file_counts_as_silence():
    speech = _segment(1.0, 5)
    first, second = _invented(20.0), _invented(30.0)
    f = SilenceFilter(threshold=2.0)
    assert f.feed([speech, first, second]) == [speech]  # first: followed by another anomaly; second: waits
    assert f.finish(31.0) == [] and f.dropped == 2  # second ends within 2 s of the end
    g = SilenceFilter(threshold=2.0)
    g.feed([speech, _invented(20.0)])
    assert len(g.finish(21.5)) == 0  # 0.7 s before the end: END_MARGIN_S
    h = SilenceFilter(threshold=5.0)
    h.feed([speech, _invented(20.0)])
    assert len(h.finish(24.0)) == 1  # 3.2 s of audio after it: neither past the threshold nor within 2 s


def test_real_speech_in_silence_keeps_its_words_under_the_rule(tmp_path, capsys):
    """Through the CLI, both chunking modes: the rule is wired in (segments have words, the file's speech stays)."""
    import soundfile as sf

    audio, sr = sf.read(str(EXAMPLES / "short.wav"), dtype="float32")
    silence = np.zeros(20 * sr, np.float32)
    sf.write(str(tmp_path / "padded.wav"), np.concatenate([silence, audio, silence]), sr)
    words = {}
    for extra in ([], ["--hallucination-silence-threshold", "2"]):
        for chunking in ("batched", "sequential"):
            out = tmp_path / f"{chunking}{len(extra)}"
            code, _, err = run_cli(["transcribe", tmp_path / "padded.wav", "-o", out, "-f", "json", "-q",
                                    "--timestamps", "word", "--chunking", chunking, *extra], capsys)
            assert code == 0, err
            data = json.loads((out / "padded.json").read_text())
            assert all(seg["words"] for seg in data["segments"])
            words[chunking, bool(extra)] = len(data["text"].split())
    for chunking in ("batched", "sequential"):
        assert words[chunking, True] >= 0.75 * words[chunking, False] > 0, words
