"""Word timing on the model that decoded: one forced pass over the lean loop's layers, no second model.

The reference is what word timing used before: transformers' Whisper decoder (the same weights and quantization,
loaded a second time) with eager attention and ``output_attentions``, through the same DTW.
"""

import pytest

from whisperctl import EngineConfig, Transcriber, alignment, leanloop, loading
from whisperctl.backends.generate import transformers_model

JFK = "whisper/jfk.flac"


@pytest.fixture(scope="module")
def native():
    """fp32 weights: the comparisons below are of one computation in two implementations; int8 Linear layers
    run different kernels in transformers' modules and the lean loop's on some CPUs (AVX-512 VNNI: weights 7e-3
    apart, word probabilities 0.02), which would test the kernels, not the alignment."""
    return Transcriber(EngineConfig(timestamps="word", quantization="none")).load()


def _words(result):
    return [w for s in result.segments for w in s.words]


def _transformers_cross_attention(model):
    """LeanDecoder.cross_attention as transformers' decoder computes it (eager attention, output_attentions)."""
    import torch

    def run(self, encoder_hidden, tokens, heads):
        implementation = model.config._attn_implementation
        model.set_attn_implementation("eager")
        try:
            out = model.get_decoder()(input_ids=tokens, encoder_hidden_states=encoder_hidden, output_attentions=True)
        finally:
            model.set_attn_implementation(implementation)
        return out.last_hidden_state, torch.stack([out.cross_attentions[layer][:, head] for layer, head in heads], dim=1).float()

    return run


def _captured_alignment_input(transcriber, path, monkeypatch):
    """The arguments word timing receives for ``path``'s first batch (model, backend, windows, prompts, tokens,
    seconds)."""
    calls = []
    real = alignment.token_timings
    monkeypatch.setattr(alignment, "token_timings", lambda *a: calls.append(a) or real(*a))
    transcriber.transcribe(path)
    monkeypatch.setattr(alignment, "token_timings", real)
    return calls[0]


def test_forced_pass_weights_equal_transformers_attentions(native, speech, monkeypatch):
    import torch

    lm = native.loaded
    _, _, windows, prefixes, token_lists, _ = _captured_alignment_input(native, str(speech / JFK), monkeypatch)
    hidden = windows.hidden
    full = prefixes[0] + token_lists[0] + [lm.eos_id]
    short = full[: len(full) // 2]
    # two rows, the shorter right-padded: padding must not reach the positions before it
    ids = torch.tensor([full, short + [lm.eos_id] * (len(full) - len(short))])
    heads = [tuple(h) for h in lm.model.generation_config.alignment_heads]
    encoded = hidden[:1].expand(2, -1, -1)
    with torch.inference_mode():
        states, weights = lm.backend.loop.cross_attention(encoded, ids, heads)
        their_states, theirs = _transformers_cross_attention(transformers_model(lm))(None, encoded, ids, heads)
    assert weights.dtype == torch.float32 and weights.shape == (2, len(heads), len(full), hidden.shape[1])
    torch.testing.assert_close(weights, theirs, atol=1e-5, rtol=1e-4)
    # the hidden states where the tokens are real (past them, repeated end-of-text tokens drift apart in int8)
    torch.testing.assert_close(states[0], their_states[0], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(states[1, : len(short)], their_states[1, : len(short)], atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(weights[1, :, : len(short)], weights[0, :, : len(short)])


def test_native_word_timestamps_load_no_second_model(speech, references, monkeypatch):
    from whisperctl.wer import wer

    loads = []
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    t = Transcriber(EngineConfig(timestamps="word"))
    result = t.transcribe(str(speech / JFK))
    assert t.loaded.native and len(loads) == 1
    words = _words(result)
    assert wer([references[JFK]], [" ".join(w.word for w in words)]) <= 0.1
    assert all(0 <= w.start <= w.end <= result.duration for w in words)
    assert all(a.start <= b.start for a, b in zip(words, words[1:]))
    assert all(0 < w.probability <= 1 for w in words)
    assert result.timings["align_s"] < result.timings["decode_s"]  # was 10x decode_s with the second load


def test_word_times_match_the_transformers_alignment(native, speech, monkeypatch):
    ours = _words(native.transcribe(str(speech / JFK)))
    monkeypatch.setattr(leanloop.LeanDecoder, "cross_attention", _transformers_cross_attention(transformers_model(native.loaded)))
    reference = _words(native.transcribe(str(speech / JFK)))
    assert [w.word for w in ours] == [w.word for w in reference]
    gaps = [abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(ours, reference)]
    assert sum(gaps) / (2 * len(gaps)) <= 0.1
    assert [w.probability for w in ours] == pytest.approx([w.probability for w in reference], abs=0.01)


def test_generate_decoder_aligns_on_the_model_it_decoded_with(native, speech, monkeypatch):
    """transformers' model and generate() (what CUDA runs): the same forced pass over its layers, one load."""
    loads = []
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loads.append(k) or real_load(*a, **k))
    t = Transcriber(EngineConfig(timestamps="word", decoder="generate"))
    words = _words(t.transcribe(str(speech / JFK)))
    assert len(loads) == 1 and t.loaded.backend.name == "generate" and not t.loaded.native
    assert t.loaded.backend.alignment_decoder() is t.loaded.backend.alignment_decoder()
    reference = _words(native.transcribe(str(speech / JFK)))
    assert [w.word for w in words] == [w.word for w in reference]
    gaps = [abs(a.start - b.start) + abs(a.end - b.end) for a, b in zip(words, reference)]
    assert sum(gaps) / (2 * len(gaps)) <= 0.1


@pytest.mark.parametrize("width", [7, 5])
def test_median_filter_equals_a_sorted_window(width):
    import torch

    weights = torch.rand(3, 9, 200, generator=torch.Generator().manual_seed(0))
    weights[:, :, 50:60] = 0.5  # ties
    normalised = (weights - weights.mean(dim=-2, keepdim=True)) / (weights.std(dim=-2, keepdim=True, unbiased=False) + 1e-10)
    padded = torch.nn.functional.pad(normalised, (width // 2, width // 2), mode="replicate")
    expected = padded.unfold(-1, width, 1).sort(dim=-1).values[..., width // 2]
    assert torch.equal(alignment._normalised_median(weights, width), expected)
