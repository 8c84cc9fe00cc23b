"""Sequential parity with faster-whisper (issue 25): the same bundled weights, the same recording (LJ 231 s),
whisperctl's seeking loop and faster-whisper's ``transcribe``, greedy and beam 5, int8 and fp32.

Both run the whole file without a VAD (faster-whisper's default) and with one seeking loop (no sections), so the
two loops see the same windows; WER against the reference, not exact text: int8 kernels differ between
CTranslate2 and torch, so the words may differ where the two are unsure. Bound: the two WERs within
PARITY_POINTS of each other (measured on an AVX2 EPYC: fp32 greedy 3.17 % both, int8 greedy 3.00 %
against 3.35 %). ``benchmarks/sequential_diff.py`` prints the first window where the two differ.
Slow (4 decodes of 231 s by each system): ``pytest -m slow tests/test_parity.py``.
"""

import pytest

from whisperctl.wer import wer

LJ = "TTS/LJ001-0001_to_0032_concat.wav"
PARITY_POINTS = 0.5


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp32"])
@pytest.mark.parametrize("beam", [1, 5])
def test_sequential_loop_matches_faster_whisper_on_lj(speech, references, precision, beam):
    faster_whisper = pytest.importorskip("faster_whisper")
    from whisperctl import EngineConfig, Transcriber, models

    path = str(speech / LJ)
    quantization = "int8" if precision == "int8" else "none"
    t = Transcriber(EngineConfig(quantization=quantization, threads=2, beam_size=beam, chunking="sequential",
                                 vad="none", section_length_s=0))
    ours = t.transcribe(path).text
    ct2 = models.ct2_source(models.resolve("tiny.en"))[0]
    fw = faster_whisper.WhisperModel(str(ct2), device="cpu", compute_type="int8" if precision == "int8" else "float32",
                                     cpu_threads=2)
    segments, _ = fw.transcribe(path, language="en", beam_size=beam, vad_filter=False)
    theirs = "".join(s.text for s in segments)
    ours_wer, theirs_wer = wer([references[LJ]], [ours]), wer([references[LJ]], [theirs])
    assert abs(ours_wer - theirs_wer) <= PARITY_POINTS / 100, (
        f"{precision} beam {beam}: whisperctl {100 * ours_wer:.2f} % vs faster-whisper {100 * theirs_wer:.2f} %")
