"""The backend seam: the decoding policy talks to one protocol; the lean backend runs on any device and dtype.

CUDA cannot be run here, so the lean loop is held to what makes it device-agnostic by construction: every tensor
it creates names its device (run under ``torch.device("meta")`` as the default device, a tensor made without one
lands on the meta device and the pass fails or differs), and its buffers follow the model's dtype (bf16 here).
The meta check runs in fp32 (bf16 matmuls are slow on most CPUs); the code it checks does not depend on the dtype.
"""

import json

import numpy as np
import pytest

from whisperctl import EngineConfig, RunControl, Transcriber
from whisperctl import audio as audio_mod
from whisperctl.decoding import WindowDecoder

from conftest import run_cli

SR = audio_mod.SAMPLE_RATE


def _noise(*seconds):
    rng = np.random.default_rng(3)
    return [rng.normal(0, 0.1, SR * s).astype(np.float32) for s in seconds]


@pytest.fixture(scope="module")
def bf16_lean(tiny_random_model):
    return Transcriber(EngineConfig(model=str(tiny_random_model), dtype="bf16", decoder="lean", quantization="none")).loaded


def _searches(lm, hidden, prompts):
    loop = lm.backend.loop
    return [
        loop.greedy(hidden, prompts, True, max_new_tokens=20, no_speech_id=lm.no_speech_id),
        loop.greedy(hidden, prompts, True, max_new_tokens=20, temperature=1.0, seeds=[1, 2]),
        loop.beam(hidden, prompts, True, 2, max_new_tokens=20, no_speech_id=lm.no_speech_id),
        loop.greedy(hidden[:1], prompts[:1], False, max_new_tokens=131, min_new_tokens=131),  # the buffers grow past 128
    ]


def test_every_tensor_the_lean_loop_creates_names_its_device(tiny_random_model):
    import torch

    lm = Transcriber(EngineConfig(model=str(tiny_random_model), decoder="lean", quantization="none")).loaded
    with torch.inference_mode():
        hidden = lm.model.get_encoder()(lm.features(_noise(30, 5)))[0]
        prompts = [lm.prefix("en", EngineConfig().decode_options().task, timestamps=True)] * 2
        expected = _searches(lm, hidden, prompts)
        with torch.device("meta"):  # the default device of any tensor made without naming one
            got = _searches(lm, hidden, prompts)
            unnamed = torch.tensor([1, 2])
    assert unnamed.device.type == "meta"  # the context does catch a tensor made without a device
    assert got == expected
    assert [len(row) for row in expected[3][0]] == [131]


def test_the_lean_loop_follows_the_model_dtype(bf16_lean):
    import torch

    lm = bf16_lean
    assert lm.backend.name == "lean" and not lm.native
    step = lm.backend.loop.step
    with torch.inference_mode():
        hidden = lm.model.get_encoder()(lm.features(_noise(30)))[0]
        keys, values = step.buffers(1, 8, hidden)
        logits = lm.backend.loop.first_logits(hidden, lm.sot_id)
    assert hidden.dtype == torch.bfloat16
    assert {k.dtype for k in keys + values} == {torch.bfloat16}
    assert logits.dtype == torch.float32 and torch.isfinite(logits).any()


def test_bf16_lean_and_generate_decode_through_the_same_policy(bf16_lean, tiny_random_model):
    """Both backends answer the policy's questions in bf16; rows differ (bf16 rounds differently per kernel) but
    each gives its tokens with finite numbers and the decoder it ran is reported."""
    plain = Transcriber(EngineConfig(model=str(tiny_random_model), dtype="bf16", decoder="generate", quantization="none")).loaded
    options = EngineConfig(temperature=(0.0,)).decode_options()
    for lm, name in ((bf16_lean, "lean"), (plain, "generate")):
        decoder = WindowDecoder(lm, options, timestamps=False, control=RunControl(decode_tokens=12))
        assert decoder.backend.name == name
        results = decoder.decode(_noise(30, 4), [None, None])
        assert [len(r.tokens) for r in results] == [12, 12]
        assert all(np.isfinite(r.avg_logprob) for r in results)


def test_decoder_lean_on_the_cpu_runs_whisperctl_native(tiny_random_model):
    auto = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none")).load()
    lean = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none", decoder="lean")).load()
    generate = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none", decoder="generate")).load()
    assert [t.runtime_info()["decoder"] for t in (auto, lean, generate)] == ["lean", "lean", "generate"]


def test_unknown_decoder_lists_lean(capsys):
    code, _, err = run_cli(["transcribe", "x.wav", "--decoder", "leen"], capsys)
    assert code == 2
    assert "--decoder: unknown value 'leen'. Valid: auto, lean, generate. Did you mean 'lean'?" in err


def test_bench_compares_decoders(tiny_random_model, capsys, tmp_path):
    out = tmp_path / "r.json"
    code, stdout, err = run_cli(["bench", "--model", tiny_random_model, "--decoders", "lean,generate", "--batch-sizes", "1",
                                 "--decode-tokens", "4", "--warmup", "0", "--repeats", "1", "--json", out], capsys)
    assert code == 0, err
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert result["spec"]["decoders"] == ["lean", "generate"]
    assert [(r["decoder_option"], r["decoder"], r["status"]) for r in rows] == [("lean", "lean", "ok"), ("generate", "generate", "ok")]
    assert rows[0]["decoder_speedup"] == 1.0 and rows[1]["decoder_speedup"] > 0
    assert "decoder" in stdout and "vs 1st decoder" in stdout


class _ScriptedBackend:
    """A backend that answers from a script: the policy's decisions tested without running a model."""

    name = "scripted"

    def __init__(self, lm, sums_by_temperature):
        self.lm, self.sums, self.passes = lm, sums_by_temperature, []

    def encode(self, features):
        from whisperctl.backends import Windows

        return Windows(features, lambda f: f)

    def search(self, windows, prompts, options, task):
        from whisperctl.backends import Found

        self.passes.append((options.temperature, len(prompts), options.keys))
        row = self.lm.text_tokens(f"hello at {options.temperature}") + [self.lm.eos_id]
        return Found([list(row) for _ in prompts], [0.1] * len(prompts), [self.sums[options.temperature]] * len(prompts))


def test_the_policy_falls_back_through_any_backend(tiny_random_model):
    """Too unlikely at 0 and 0.2, fine at 0.4: the policy asks the backend again, hotter, with each window's audio
    key (so its draws do not depend on its batch), and keeps the pass that met the thresholds."""
    from whisperctl import decoding

    lm = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none")).loaded
    backend = _ScriptedBackend(lm, {0.0: -30.0, 0.2: -30.0, 0.4: -1.0})
    options = EngineConfig(temperature=(0.0, 0.2, 0.4, 0.6)).decode_options()
    results = WindowDecoder(lm, options, backend=backend).decode(_noise(3, 4), [None, None])
    # above 0 each window draws best_of (5) candidates, keyed by its audio and the draw's number
    assert [(t, n) for t, n, _ in backend.passes] == [(0.0, 2), (0.2, 10), (0.4, 10)]
    keys = backend.passes[1][2]
    assert backend.passes[0][2] is None and keys == backend.passes[2][2] and keys[0] != keys[5]
    assert keys == [keys[w * 5] + c * decoding.DRAW_KEY_STEP for w in range(2) for c in range(5)]
    assert [r.temperature for r in results] == [0.4, 0.4] and results[0].text.strip() == "hello at 0.4"


class _DrawsBackend(_ScriptedBackend):
    """Greedy fails the thresholds; above 0 draw c of every window says "draw c", and draw 1's long text has the
    lowest sum but the best log-probability per token."""

    copies = 5
    TEXTS = {0: "no", 1: "one long and likely text", 2: "two", 3: "three", 4: "four"}
    SUMS = {0: -5.0, 1: -4.0, 2: -6.0, 3: -3.5, 4: -9.0}

    def search(self, windows, prompts, options, task):
        from whisperctl.backends import Found

        self.passes.append((options.temperature, len(prompts), options.keys))
        if options.temperature == 0:
            row = self.lm.text_tokens("greedy") + [self.lm.eos_id]
            return Found([list(row) for _ in prompts], [0.1] * len(prompts), [-30.0] * len(prompts))
        from whisperctl.decoding import DRAW_KEY_STEP

        n = self.copies  # each window's draws are in a row, draw c keyed c steps past the window's audio digest
        draws = [(k - options.keys[i - i % n]) // DRAW_KEY_STEP for i, k in enumerate(options.keys)]
        rows = [self.lm.text_tokens(self.TEXTS[c]) + [self.lm.eos_id] for c in draws]
        return Found(rows, [0.1] * len(prompts), [self.SUMS[c] for c in draws])


def test_a_sampled_pass_keeps_each_windows_most_likely_draw_per_token(tiny_random_model):

    lm = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none")).loaded
    backend = _DrawsBackend(lm, {})
    options = EngineConfig(temperature=(0.0, 0.5)).decode_options()
    per_token = {c: s / len(lm.text_tokens(t)) for (c, t), s in zip(_DrawsBackend.TEXTS.items(), _DrawsBackend.SUMS.values())}
    assert max(per_token, key=per_token.get) == 1 and max(_DrawsBackend.SUMS, key=_DrawsBackend.SUMS.get) == 3
    results = WindowDecoder(lm, options, backend=backend).decode(_noise(3, 2), [None, None])
    assert [r.text.strip() for r in results] == ["one long and likely text"] * 2
    assert [r.temperature for r in results] == [0.5, 0.5]
    backend.copies = 1
    one = WindowDecoder(lm, options.replace(best_of=1), backend=backend).decode(_noise(3, 2), [None, None])
    assert [r.text.strip() for r in one] == ["no", "no"]  # one draw: draw 0, whatever it says


def test_every_backend_draws_a_window_from_its_own_seed(tiny_random_model):
    """A sampled pass gives a window the same tokens alone or in any batch, with the lean loop and with
    transformers' generate() (the generate backend seeded the whole batch once: reproducible on the CPU path
    only), and both backends draw the same noise, so on fp32 weights they sample the same tokens."""
    options = EngineConfig(temperature=(1.0,), best_of=1, compression_ratio_threshold=None, logprob_threshold=None,
                           max_new_tokens=24).decode_options()
    chunks = _noise(5, 3, 4)
    found = {}
    for decoder in ("lean", "generate"):
        lm = Transcriber(EngineConfig(model=str(tiny_random_model), quantization="none", decoder=decoder)).loaded
        assert lm.backend.name == decoder
        together = WindowDecoder(lm, options).decode(chunks, [None] * 3)
        alone = [WindowDecoder(lm, options).decode([c], [None])[0] for c in chunks]
        assert [r.tokens for r in together] == [r.tokens for r in alone], decoder
        assert len({tuple(r.tokens) for r in together}) > 1  # draws, not one sequence thrice
        found[decoder] = [r.tokens for r in together]
    assert found["lean"] == found["generate"]
