"""The CPU fast paths must not change results: the lean greedy loop produces exactly the tokens transformers'
generate() produces, and the window-by-window encoder computes what the encoder computes per window."""

import numpy as np
import pytest

from whisperctl import EngineConfig, Transcriber
from whisperctl import audio as audio_mod

from conftest import EXAMPLES

LJ = "TTS/LJ001-0001_to_0032_concat.wav"
SR = audio_mod.SAMPLE_RATE


def _both(t: Transcriber, chunks, timestamps=True, languages=None):
    """Rows from the lean loop and from generate() for the same windows (prompt echo included in both)."""
    if timestamps and not t.unique_call:
        pytest.skip("this transformers has no force_unique_generate_call: its generate() re-segments timestamped "
                    "output instead of returning the single decoding pass the lean loop reproduces")
    feats = t._features(chunks)
    languages = languages or [None] * len(chunks)
    lean = t.greedy
    assert lean is not None, "the lean loop should be active on the CPU"
    with t._attention_context():
        mine, _ = t._generate_rows(feats, languages, timestamps, 0.0)
        t.greedy = None
        try:
            theirs, _ = t._generate_rows(feats, languages, timestamps, 0.0)
        finally:
            t.greedy = lean
    strip = lambda row: [x for x in row if x != t.eos_id]  # noqa: E731 (generate() pads finished rows)
    return [strip(r) for r in mine], [strip(r) for r in theirs]


def _windows(samples: np.ndarray, n: int, stride_s: float = 25.0) -> list[np.ndarray]:
    return [samples[int(i * stride_s * SR) : int((i * stride_s + 30) * SR)] for i in range(n)]


@pytest.fixture(scope="module", params=["int8", "none"])
def bundled(request):
    return Transcriber(EngineConfig(quantization=request.param, attention="sdpa")).load()


def test_same_tokens_as_generate_on_real_speech(bundled, speech):
    samples = audio_mod.load(str(speech / LJ))
    # 6 full windows and a 9 s tail in one batch: rows finish at different steps
    chunks = _windows(samples, 6) + [samples[int(200 * SR) : int(209 * SR)]]
    mine, theirs = _both(bundled, chunks)
    assert mine == theirs
    assert all(len(r) > 20 for r in mine)
    assert any(t >= bundled.timestamp_begin for t in mine[0])


def test_same_tokens_without_timestamps(bundled):
    samples = audio_mod.load(str(EXAMPLES / "long.flac"))
    mine, theirs = _both(bundled, _windows(samples, 3), timestamps=False)
    assert mine == theirs
    assert all(t < bundled.timestamp_begin for r in mine for t in r)


def test_same_tokens_at_batch_one_on_the_bundled_example(bundled):
    samples = audio_mod.load(str(EXAMPLES / "short.wav"))
    mine, theirs = _both(bundled, [samples])
    assert mine == theirs and len(mine[0]) > 3


def test_same_transcript_through_the_engine(speech):
    lean = Transcriber(EngineConfig()).transcribe(str(speech / LJ))
    plain = Transcriber(EngineConfig(decoder="generate")).transcribe(str(speech / LJ))
    assert lean.runtime["decoder"] == "whisperctl" and plain.runtime["decoder"] == "generate"
    assert lean.text == plain.text
    assert [(s.start, s.end) for s in lean.segments] == [(s.start, s.end) for s in plain.segments]


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_random_weights_exercise_every_timestamp_rule(tiny_random_model, attention):
    """Near-uniform logits from random weights wander through the timestamp rules (pairs, monotonic times,
    end-of-text right after a timestamp) far more than speech does; the loop must agree step for step."""
    t = Transcriber(EngineConfig(model=str(tiny_random_model), attention=attention, quantization="none")).load()
    rng = np.random.default_rng(1)
    chunks = [rng.normal(0, 0.1, SR * s).astype(np.float32) for s in (30, 12, 3, 30)]
    mine, theirs = _both(t, chunks)
    assert mine == theirs
    assert sum(x >= t.timestamp_begin for r in mine for x in r) > 8


@pytest.mark.parametrize("tokens", [17, 300])  # 300: the key/value buffers grow past their first 128 positions
def test_max_and_min_new_tokens_match_generate(tokens):
    t = Transcriber(EngineConfig(quantization="none", decode_tokens=tokens)).load()
    chunks = _windows(audio_mod.load(str(EXAMPLES / "long.flac")), 2)
    mine, theirs = _both(t, chunks, timestamps=False)
    assert mine == theirs
    assert all(t._generated_count(r + [t.eos_id], False) == tokens for r in mine)


class _Refuse:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the lean loop ran")


def test_generate_is_used_where_the_loop_does_not_apply():
    assert Transcriber(EngineConfig(decoder="generate")).load().greedy is None
    beam = Transcriber(EngineConfig(beam_size=2)).load()
    assert beam.greedy is None and beam.runtime_info()["decoder"] == "generate"
    feats = None
    for config, temperature, lean_expected in [
        (EngineConfig(), 0.0, True),
        (EngineConfig(beam_size=2), 0.0, False),  # beam search
        (EngineConfig(), 0.4, False),  # a sampled fallback pass
        (EngineConfig(initial_prompt="Gutenberg"), 0.0, False),  # prompt_ids
    ]:
        t = Transcriber(config).load()
        feats = t._features([np.zeros(SR, np.float32)]) if feats is None else feats
        t.greedy = _Refuse()
        if lean_expected:
            with pytest.raises(AssertionError, match="lean loop ran"):
                t._generate_rows(feats, [None], True, temperature)
        else:
            assert t._generate_rows(feats, [None], True, temperature)[0]


def test_encoder_runs_window_by_window_on_the_cpu(bundled):
    import torch

    samples = audio_mod.load(str(EXAMPLES / "long.flac"))
    feats = bundled._features(_windows(samples, 3))
    encoder = bundled.model.get_encoder()
    seen = []
    hook = encoder.layers[0].register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    try:
        with torch.inference_mode():
            together = encoder(feats)[0]
            alone = [encoder(feats[i : i + 1])[0] for i in range(3)]
    finally:
        hook.remove()
    assert together.shape[0] == 3 and seen == [1, 1, 1, 1, 1, 1]
    # each window is computed on its own, so int8 activation scales are per window: identical results
    assert all(torch.equal(together[i : i + 1], alone[i]) for i in range(3))


def test_features_window_by_window_equal_the_batched_extractor(bundled):
    import torch

    samples = audio_mod.load(str(EXAMPLES / "long.flac"))
    chunks = _windows(samples, 3) + [samples[: SR * 4]]  # a short window is padded to 30 s like the others
    ours = bundled._features(chunks)
    batched = bundled.feature_extractor(chunks, sampling_rate=SR, return_tensors="pt").input_features
    assert ours.shape == batched.shape == (4, 80, 3000)
    torch.testing.assert_close(ours, batched)


def test_int8_linears_are_bit_identical_to_quantize_dynamic():
    import copy
    import warnings

    import torch
    from torch.ao.quantization import quantize_dynamic

    from whisperctl.int8 import DynamicInt8Linear, quantize_linears

    fp32 = Transcriber(EngineConfig(quantization="none")).load()
    ours = copy.deepcopy(fp32.model)
    assert quantize_linears(ours) == 65  # tiny.en: 4+4 layers' projections and MLPs, and proj_out
    assert isinstance(ours.proj_out, DynamicInt8Linear)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantize_dynamic(fp32.model, {torch.nn.Linear}, dtype=torch.qint8)
    feats = fp32._features([audio_mod.load(str(EXAMPLES / "short.wav"))])
    ids = torch.tensor([[50257, 50363, 843, 523, 616]])
    with torch.inference_mode():
        a = ours(input_features=feats, decoder_input_ids=ids).logits
        b = theirs(input_features=feats, decoder_input_ids=ids).logits
    assert torch.equal(a, b)


def test_no_speech_probability_from_the_first_step_matches_a_separate_pass(bundled):
    import torch

    samples = audio_mod.load(str(EXAMPLES / "short.wav"))
    chunks = [samples, np.zeros(SR * 5, np.float32), np.random.default_rng(0).normal(0, 0.003, SR * 8).astype(np.float32)]
    feats = bundled._features(chunks)
    with bundled._attention_context():
        rows, p_loop = bundled._generate_rows(feats, [None] * 3, True, 0.0)
        hidden = bundled.model.get_encoder()(feats)[0]
        sot = torch.full((3, 1), int(bundled.model.generation_config.decoder_start_token_id))
        from transformers.modeling_outputs import BaseModelOutput

        logits = bundled.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), decoder_input_ids=sot).logits
        p_pass = torch.softmax(logits[:, 0].float(), dim=-1)[:, bundled.no_speech_id].tolist()
        silent = bundled._silent_windows(hidden, rows, [None] * 3, True, p_loop)
        assert silent == bundled._silent_windows(hidden, rows, [None] * 3, True)
    assert p_loop == pytest.approx(p_pass, abs=1e-6)
    assert p_loop[0] < 0.6 < p_loop[1]  # speech vs digital silence
    assert silent[0] is False and silent[1] is True
