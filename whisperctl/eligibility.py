"""Can this machine run a given attention / dtype / quantization choice, and if not, why?

The single source of truth used by ``--attn auto``, ``bench``'s skipped rows and ``doctor``. Facts about
the machine are gathered once into an :class:`Environment` by :func:`probe` (tests build one by hand to
simulate a P100, a T4, an H100 …); every decision is a pure function of a config and an Environment.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys

from packaging.version import InvalidVersion, Version

from .config import Attention, DType, EngineConfig, Quantization
from .errors import EligibilityError

# Version floors, each with the reason it exists.
TORCH_SDPA_FLOOR = Version("2.1.1")  # Whisper SDPA path in transformers needs torch ≥ 2.1.1
TRANSFORMERS_SDPA_FLOOR = Version("4.36")  # first transformers release with Whisper SDPA
TORCH_SDPA_KERNEL_FLOOR = Version("2.3")  # torch.nn.attention.sdpa_kernel (backend pinning)
TORCH_FLEX_FLOOR = Version("2.5")  # torch.nn.attention.flex_attention
TRANSFORMERS_FLEX_FLOOR = Version("4.48")  # Whisper flex_attention support
FA2_MIN_CAPABILITY = (8, 0)  # flash-attn 2: Ampere or newer
SDPA_FLASH_MIN_CAPABILITY = (8, 0)  # PyTorch's own flash kernel: sm80+
SDPA_EFFICIENT_MIN_CAPABILITY = (5, 0)
HALF_DTYPES = (DType.FP16, DType.BF16)


@dataclasses.dataclass(frozen=True)
class GPU:
    index: int
    name: str
    capability: tuple[int, int]
    total_bytes: int = 0
    free_bytes: int = 0

    @property
    def bf16(self) -> bool:
        return self.capability >= (8, 0)

    @property
    def label(self) -> str:
        return f"cuda:{self.index} ({self.name}, sm {self.capability[0]}.{self.capability[1]})"


@dataclasses.dataclass(frozen=True)
class Package:
    name: str
    version: str | None = None  # installed distribution version, None when not installed
    importable: bool = False
    error: str | None = None  # why the import failed, one line

    @property
    def installed(self) -> bool:
        return self.version is not None


@dataclasses.dataclass(frozen=True)
class Environment:
    """Facts about this machine that decide eligibility. Build with :func:`probe` or by hand in tests."""

    python: str
    torch: str | None
    transformers: str | None
    cuda_available: bool = False
    torch_cuda: str | None = None
    gpus: tuple[GPU, ...] = ()
    mps_available: bool = False
    flash_attn: Package = Package("flash-attn")
    bitsandbytes: Package = Package("bitsandbytes")
    cpu_sdpa_backends: frozenset[str] = frozenset({"math"})  # pinned backends that ran on this CPU
    cudnn_backend: bool = False  # this torch has SDPBackend.CUDNN_ATTENTION
    memory_available_bytes: int = 0  # host memory available now (psutil); 0 = unknown

    def gpu(self, device: str) -> GPU | None:
        if not device.startswith("cuda"):
            return None
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return next((g for g in self.gpus if g.index == index), None)


@dataclasses.dataclass(frozen=True)
class Verdict:
    usable: bool
    reason: str  # why (not) — one line
    fix: str = ""  # what to do instead — one line, empty when usable


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the engine will actually run: every ``auto`` resolved, with the reason for the attention pick."""

    device: str
    dtype: DType
    attention: Attention
    quantization: Quantization
    attention_reason: str
    attention_auto: bool = False  # picked by --attn auto, not requested by name

    @property
    def auto_fell_back(self) -> bool:
        """``--attn auto`` on a CUDA GPU settled for less than flash_attention_2. Worth telling the user: on a GPU
        they may expect the fastest kernel; on a CPU or MPS sdpa is the expected pick and goes unsaid."""
        return self.attention_auto and self.device.startswith("cuda") and self.attention is not Attention.FLASH_ATTENTION_2


def _v(text: str | None) -> Version | None:
    if not text:
        return None
    try:
        return Version(text.split("+", 1)[0])
    except InvalidVersion:
        return None


def dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_import_in_subprocess(module: str, timeout: float = 60.0) -> tuple[bool, str | None]:
    """Import ``module`` in a child interpreter: a flash-attn built for another torch can crash the process."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", f"import {module}"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"import {module} did not finish within {timeout:.0f} s"
    except OSError as exc:
        return False, f"cannot start a Python subprocess: {exc}"
    if proc.returncode == 0:
        return True, None
    lines = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
    detail = lines[-1] if lines else f"exit code {proc.returncode} (crashed: likely an ABI mismatch with torch)"
    return False, detail[:300]


def _package(dist: str, module: str, check_import: bool) -> Package:
    version = dist_version(dist)
    if version is None:
        return Package(dist)
    if not check_import:
        return Package(dist, version, importable=importlib.util.find_spec(module) is not None)
    ok, err = check_import_in_subprocess(module)
    return Package(dist, version, ok, err)


def _probe_cpu_sdpa_backends() -> frozenset[str]:
    import torch

    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:
        return frozenset()
    names = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH", "cudnn": "CUDNN_ATTENTION"}
    q = torch.zeros(1, 1, 4, 8)
    ok = set()
    for short, attr in names.items():
        backend = getattr(SDPBackend, attr, None)
        if backend is None:
            continue
        try:
            with sdpa_kernel(backend):
                torch.nn.functional.scaled_dot_product_attention(q, q, q)
            ok.add(short)
        except RuntimeError:
            pass
    return frozenset(ok)


@functools.lru_cache(maxsize=2)
def probe(check_flash_attn_import: bool | None = None) -> Environment:
    """Gather the facts. Imports torch; imports flash-attn in a subprocess only when a GPU could use it."""
    import torch

    cuda = bool(torch.cuda.is_available())
    gpus = []
    if cuda:
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            try:
                free, total = torch.cuda.mem_get_info(i)
            except RuntimeError:
                free, total = 0, int(props.total_memory)
            gpus.append(GPU(i, props.name, (props.major, props.minor), int(total), int(free)))
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if check_flash_attn_import is None:
        check_flash_attn_import = cuda
    try:
        from torch.nn.attention import SDPBackend

        cudnn = hasattr(SDPBackend, "CUDNN_ATTENTION")
    except ImportError:
        cudnn = False
    return Environment(
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=dist_version("transformers"),
        cuda_available=cuda,
        torch_cuda=getattr(torch.version, "cuda", None),
        gpus=tuple(gpus),
        mps_available=mps,
        flash_attn=_package("flash-attn", "flash_attn", check_flash_attn_import),
        bitsandbytes=_package("bitsandbytes", "bitsandbytes", check_import=False),
        cpu_sdpa_backends=_probe_cpu_sdpa_backends(),
        cudnn_backend=cudnn,
        memory_available_bytes=_host_memory_available(),
    )


def _host_memory_available() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - unknown memory disables the check, never the run
        return 0


def resolve_device(device: str, env: Environment) -> str:
    if device == "auto":
        if env.cuda_available and env.gpus:
            return "cuda:0"
        return "mps" if env.mps_available else "cpu"
    if device.startswith("cuda"):
        if not env.cuda_available:
            raise EligibilityError(
                f"--device {device}: CUDA is not available here (torch {env.torch}, "
                f"CUDA build: {env.torch_cuda or 'none'}). Use --device cpu, or install a CUDA build of torch."
            )
        if env.gpu(device) is None:
            raise EligibilityError(
                f"--device {device}: no such GPU; found {len(env.gpus)} ({', '.join(g.label for g in env.gpus)})."
            )
        return device if ":" in device else "cuda:0"
    if device == "mps" and not env.mps_available:
        raise EligibilityError("--device mps: Apple MPS is not available here. Use --device cpu.")
    return device


def dtype_verdict(dtype: DType, device: str, env: Environment) -> Verdict:
    if dtype == DType.BF16 and device.startswith("cuda"):
        gpu = env.gpu(device)
        if gpu is not None and not gpu.bf16:
            cc = f"{gpu.capability[0]}.{gpu.capability[1]}"
            return Verdict(False, f"bf16 needs compute capability ≥ 8.0, found {cc} ({gpu.name})", "use --dtype fp16")
    if dtype == DType.FP16 and device == "cpu":
        return Verdict(True, "fp16 runs on CPU but is slow there (no fp16 matmul units)", "")
    return Verdict(True, f"{dtype.value} on {device}")


def resolve_dtype(dtype: DType, device: str, env: Environment) -> DType:
    if dtype == DType.AUTO:
        return DType.FP16 if device.startswith("cuda") else DType.FP32
    verdict = dtype_verdict(dtype, device, env)
    if not verdict.usable:
        raise EligibilityError(f"--dtype {dtype.value}: {verdict.reason}. Fix: {verdict.fix}.")
    return dtype


def _sdpa_floor_problem(env: Environment) -> str | None:
    tv, trv = _v(env.torch), _v(env.transformers)
    if tv is None or tv < TORCH_SDPA_FLOOR:
        return f"needs torch ≥ {TORCH_SDPA_FLOOR}, found {env.torch or 'none'}"
    if trv is None or trv < TRANSFORMERS_SDPA_FLOOR:
        return f"needs transformers ≥ {TRANSFORMERS_SDPA_FLOOR}, found {env.transformers or 'none'}"
    return None


def attention_verdict(attention: Attention, device: str, dtype: DType, env: Environment) -> Verdict:
    """Whether ``attention`` can run on a resolved ``device`` with a resolved ``dtype``, and why (not)."""
    gpu = env.gpu(device)
    cc = f"{gpu.capability[0]}.{gpu.capability[1]}" if gpu else ""
    where = f"{gpu.name}, sm {cc}" if gpu else device

    if attention == Attention.AUTO:
        raise ValueError("resolve 'auto' with make_plan()")
    if attention == Attention.EAGER:
        return Verdict(True, "plain PyTorch attention; runs everywhere and can return attention weights")

    if attention == Attention.FLASH_ATTENTION_2:
        if not device.startswith("cuda"):
            return Verdict(False, f"flash_attention_2 needs an NVIDIA CUDA GPU; this run uses {device}", "use --attn sdpa")
        if gpu is not None and gpu.capability < FA2_MIN_CAPABILITY:
            return Verdict(False, f"flash_attention_2 needs compute capability ≥ 8.0, found {cc} ({gpu.name})", "use --attn sdpa")
        if dtype not in HALF_DTYPES:
            return Verdict(False, f"flash_attention_2 needs fp16/bf16, got {dtype.value}", "add --dtype fp16 or bf16, or use --attn sdpa")
        if not env.flash_attn.installed:
            return Verdict(False, "flash-attn is not installed", "pip install 'whisperctl[fa2]', or use --attn sdpa")
        if not env.flash_attn.importable:
            why = env.flash_attn.error or "import failed"
            return Verdict(False, f"flash-attn {env.flash_attn.version} does not import: {why}", "reinstall flash-attn built for this torch, or use --attn sdpa")
        return Verdict(True, f"flash-attn {env.flash_attn.version} on {where} in {dtype.value}")

    if attention == Attention.FLEX_ATTENTION:
        tv, trv = _v(env.torch), _v(env.transformers)
        if tv is None or tv < TORCH_FLEX_FLOOR:
            return Verdict(False, f"flex_attention needs torch ≥ {TORCH_FLEX_FLOOR}, found {env.torch}", "use --attn sdpa")
        if trv is None or trv < TRANSFORMERS_FLEX_FLOOR:
            return Verdict(False, f"flex_attention for Whisper needs transformers ≥ {TRANSFORMERS_FLEX_FLOOR}, found {env.transformers}", "use --attn sdpa")
        if device == "mps":
            return Verdict(False, "flex_attention does not run on MPS", "use --attn sdpa")
        return Verdict(True, f"torch flex_attention on {where} (compiles on first use)")

    # sdpa and its pinned backends
    problem = _sdpa_floor_problem(env)
    if problem:
        return Verdict(False, f"sdpa {problem}", "upgrade torch/transformers, or use --attn eager")
    backend = attention.sdpa_backend
    if backend is None:
        return Verdict(True, f"PyTorch SDPA picks flash / memory-efficient / math per call on {where}")
    if _v(env.torch) < TORCH_SDPA_KERNEL_FLOOR:
        return Verdict(False, f"pinning an SDPA backend needs torch ≥ {TORCH_SDPA_KERNEL_FLOOR}", "use --attn sdpa")
    if device == "cpu":
        if backend in env.cpu_sdpa_backends:
            return Verdict(True, f"PyTorch SDPA {backend} kernel on CPU")
        return Verdict(False, f"PyTorch has no {backend} SDPA kernel for CPU", "use --attn sdpa or sdpa:math")
    if device == "mps":
        if backend == "math":
            return Verdict(True, "PyTorch SDPA math kernel on MPS")
        return Verdict(False, f"the {backend} SDPA kernel is CUDA-only", "use --attn sdpa")
    # CUDA
    if backend == "math":
        return Verdict(True, f"PyTorch SDPA math kernel on {where}")
    if backend == "efficient":
        if gpu is not None and gpu.capability < SDPA_EFFICIENT_MIN_CAPABILITY:
            return Verdict(False, f"memory-efficient SDPA needs compute capability ≥ 5.0, found {cc}", "use --attn sdpa:math")
        return Verdict(True, f"PyTorch memory-efficient SDPA kernel on {where}")
    if backend in ("flash", "cudnn"):
        if backend == "cudnn" and not env.cudnn_backend:
            return Verdict(False, f"this torch ({env.torch}) has no cuDNN SDPA backend", "use --attn sdpa:flash or sdpa")
        if gpu is not None and gpu.capability < SDPA_FLASH_MIN_CAPABILITY:
            return Verdict(False, f"the {backend} SDPA kernel needs compute capability ≥ 8.0, found {cc} ({gpu.name})", "use --attn sdpa or sdpa:efficient")
        if dtype not in HALF_DTYPES:
            return Verdict(False, f"the {backend} SDPA kernel needs fp16/bf16 on CUDA, got {dtype.value}", "add --dtype fp16, or use --attn sdpa")
        return Verdict(True, f"PyTorch SDPA {backend} kernel on {where} in {dtype.value}")
    return Verdict(False, f"unknown SDPA backend {backend}", "use --attn sdpa")


def quantization_verdict(quant: Quantization, device: str, dtype: DType, env: Environment) -> Verdict:
    if quant == Quantization.NONE:
        return Verdict(True, "no quantization")
    if device == "cpu":
        if quant == Quantization.INT4:
            return Verdict(False, "int4 needs CUDA with bitsandbytes; CPU supports int8 only", "use --quantize int8 on CPU")
        if dtype != DType.FP32:
            return Verdict(False, f"CPU int8 (dynamic quantization) computes in fp32, got --dtype {dtype.value}", "use --dtype fp32 (or auto) with --quantize int8")
        return Verdict(True, "dynamic int8 Linear layers (torch.ao) on CPU")
    if device.startswith("cuda"):
        if not env.bitsandbytes.installed:
            return Verdict(False, f"{quant.value} on CUDA needs bitsandbytes, which is not installed", "pip install 'whisperctl[quant]'")
        return Verdict(True, f"bitsandbytes {env.bitsandbytes.version} {quant.value} weights")
    return Verdict(False, f"{quant.value} quantization is not supported on {device}", "use --quantize none")


def auto_attention(device: str, dtype: DType, env: Environment) -> tuple[Attention, str]:
    """The ``--attn auto`` rule: flash_attention_2 if it can run, else sdpa, else eager; with a reason."""
    fa2 = attention_verdict(Attention.FLASH_ATTENTION_2, device, dtype, env)
    if fa2.usable:
        return Attention.FLASH_ATTENTION_2, f"auto → flash_attention_2 ({fa2.reason})"
    sdpa = attention_verdict(Attention.SDPA, device, dtype, env)
    if sdpa.usable:
        return Attention.SDPA, f"auto → sdpa (flash_attention_2 not usable: {fa2.reason})"
    return Attention.EAGER, f"auto → eager (sdpa not usable: {sdpa.reason})"


def make_plan(config: EngineConfig, env: Environment) -> Plan:
    """Resolve every ``auto`` in ``config`` for this machine; an explicit impossible choice is an error."""
    device = resolve_device(config.device, env)
    dtype = resolve_dtype(config.dtype, device, env)
    quantization = config.quantization
    if quantization == Quantization.AUTO:
        # Dynamic int8 Linear layers are the fastest CPU configuration at the same WER (docs/benchmarks.md).
        quantization = Quantization.INT8 if device == "cpu" and dtype == DType.FP32 else Quantization.NONE
    quant = quantization_verdict(quantization, device, dtype, env)
    if not quant.usable:
        raise EligibilityError(f"--quantize {config.quantization.value}: {quant.reason}. Fix: {quant.fix}.")
    if config.attention == Attention.AUTO:
        attention, reason = auto_attention(device, dtype, env)
    else:
        verdict = attention_verdict(config.attention, device, dtype, env)
        if not verdict.usable:
            raise EligibilityError(f"--attn {config.attention.value}: {verdict.reason}. Fix: {verdict.fix}.")
        attention, reason = config.attention, f"{config.attention.value} as requested ({verdict.reason})"
    return Plan(device, dtype, attention, quantization, reason, attention_auto=config.attention == Attention.AUTO)


def environment_summary(env: Environment) -> dict:
    """JSON-ready fingerprint for result files."""
    out = dataclasses.asdict(env)
    out["cpu_sdpa_backends"] = sorted(env.cpu_sdpa_backends)
    out["platform"] = platform.platform()
    out["cpu_count"] = os.cpu_count()
    return out


def memory_needed(arch: dict[str, int], dtype: DType, quantization: Quantization, batch_size: int, beam_size: int) -> int:
    """A lower bound on the bytes a decode of ``batch_size`` windows × ``beam_size`` beams holds at once.

    Counted: the weights; each window's encoder output; each sequence's cross-attention keys/values (every
    decoder layer, 1500 positions: the dominant term) and the first 128 positions of its self-attention cache.
    Left out, so the bound stays a bound: activations, logits, allocator slack. tiny.en fp32: 20 MB per
    sequence (beam 1000 → ≥ 20 GB; the kernel OOM-killed it at 24 GB); large-v3 fp16: 267 MB per sequence.
    """
    from .models import parameter_count

    act = 2 if dtype in HALF_DTYPES else 4
    weight = {Quantization.INT8: 1.0, Quantization.INT4: 0.5}.get(quantization, float(act))
    d, layers, positions = arch["d_model"], arch["decoder_layers"], arch.get("max_source_positions", 1500)
    per_sequence = 2 * layers * positions * d * act + 2 * layers * 128 * d * act
    per_window = positions * d * act
    return int(parameter_count(arch) * weight) + batch_size * per_window + batch_size * beam_size * per_sequence


def memory_problem(arch: dict[str, int] | None, plan: "Plan", batch_size: int, beam_size: int, env: Environment) -> str | None:
    """Why ``batch_size`` × ``beam_size`` cannot fit in this device's memory, or None (also when unknown)."""
    if arch is None:
        return None
    gpu = env.gpu(plan.device)
    available = gpu.total_bytes if gpu is not None else (env.memory_available_bytes if plan.device == "cpu" else 0)
    if available <= 0:
        return None
    need = memory_needed(arch, plan.dtype, plan.quantization, batch_size, beam_size)
    if need <= available:
        return None
    fits = max((b for b in range(batch_size, 0, -1) if memory_needed(arch, plan.dtype, plan.quantization, b, beam_size) <= available), default=0)
    where = f"{gpu.label} has {available / 2**30:.1f} GiB" if gpu else f"this machine has {available / 2**30:.1f} GiB available"
    fix = (f"use --batch-size {fits} or less" if fits else "use a smaller --beam-size")
    return (f"--beam-size {beam_size} × --batch-size {batch_size} needs at least {need / 2**30:.1f} GiB "
            f"(each of the {batch_size * beam_size} sequences holds its own attention keys/values); {where}. Fix: {fix}.")
