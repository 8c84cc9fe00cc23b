"""Shared fixtures: real speech (skipped when absent), the bundled model, a tiny random-weight Whisper."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SPEECH = ROOT.parent / "shared" / "speech"
EXAMPLES = ROOT / "examples"


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Each test session converts the bundled model into its own cache: the conversion itself is under test."""
    cache = os.environ.get("WHISPERCTL_TEST_CACHE") or str(tmp_path_factory.mktemp("whisperctl-cache"))
    os.environ["WHISPERCTL_CACHE"] = cache
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    yield


@pytest.fixture(scope="session")
def speech() -> Path:
    if not (SPEECH / "MANIFEST.tsv").is_file():
        pytest.skip("../shared/speech is not available")
    return SPEECH


@pytest.fixture(scope="session")
def references(speech) -> dict[str, str]:
    with (speech / "MANIFEST.tsv").open() as fh:
        return {row["file"]: row["reference_text"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="session")
def bundled_checkpoint() -> Path:
    from whisperctl import models

    return Path(models.checkpoint(models.resolve("tiny.en")))


@pytest.fixture(scope="session")
def tiny_random_model(tmp_path_factory, bundled_checkpoint) -> Path:
    """A 2-layer, 64-wide Whisper with random weights and the real tokenizer: fast plumbing tests."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    out = tmp_path_factory.mktemp("tiny-random")
    real = json.loads((bundled_checkpoint / "config.json").read_text())
    cfg = WhisperConfig(
        vocab_size=real["vocab_size"], num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
        max_source_positions=1500, max_target_positions=448, decoder_start_token_id=real["decoder_start_token_id"],
        bos_token_id=real["bos_token_id"], eos_token_id=real["eos_token_id"], pad_token_id=real["pad_token_id"],
        begin_suppress_tokens=None, suppress_tokens=None,
    )
    torch.manual_seed(0)
    WhisperForConditionalGeneration(cfg).save_pretrained(out)
    gen = json.loads((bundled_checkpoint / "generation_config.json").read_text())
    gen["alignment_heads"] = [[1, 0], [1, 1]]
    (out / "generation_config.json").write_text(json.dumps(gen))
    for name in ("tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        shutil.copy(bundled_checkpoint / name, out / name)
    return out


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if a model starts loading: usage errors must come before any load."""
    import whisperctl.engine as engine

    monkeypatch.setattr(engine.Transcriber, "load", lambda self: pytest.fail("model loaded before validation"))


@pytest.fixture
def without_distributions(monkeypatch):
    """``without_distributions("pkg", …)``: importlib.metadata says they are not installed, as on a machine without."""
    import importlib.metadata

    def hide(*names: str) -> None:
        real = importlib.metadata.version

        def version(dist):
            if dist in names:
                raise importlib.metadata.PackageNotFoundError(dist)
            return real(dist)

        monkeypatch.setattr(importlib.metadata, "version", version)

    return hide


def run_cli(args: list[str], capsys, stdin: bytes | None = None, monkeypatch=None) -> tuple[int, str, str]:
    """Run the real entry point; return (exit code, stdout, stderr)."""
    from whisperctl.cli import main

    old = sys.argv
    sys.argv = ["whisperctl", *map(str, args)]
    if stdin is not None and monkeypatch is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return code, out.out, out.err
