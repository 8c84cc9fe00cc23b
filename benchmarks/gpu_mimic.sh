#!/usr/bin/env bash
# The GPU acceptance run rehearsed on this CPU machine, in an environment built like the GPU machine's.
#
#     bash benchmarks/gpu_mimic.sh            # builds .gpu/mimic-venv once, then the dry run (a few minutes)
#     bash benchmarks/gpu_mimic.sh --venv     # only (re)build the environment
#
# What it proves: a fresh virtualenv holding only the packages the GPU machine has that matter here (KINDS.md's
# list: transformers 5.17, accelerate, numpy, rich, typer, psutil, scipy, pytest …; the CPU build of torch in
# place of its CUDA one), plus exactly the wheels benchmarks/gpu_acceptance.sh carries, plus whisperctl installed
# with --no-deps, runs every step of the acceptance script (GPU_ACCEPTANCE_DRYRUN=1: toy sizes, CPU; steps that
# need CUDA say so). A missing wheel fails an import here as it would there. The device runs Python 3.12 and the
# carried wheels are built for it; this machine's CPU torch wheel is for 3.11, so the venv is 3.11 and installs
# the same names and versions built for 3.11 (checked equal), while the carried 3.12 wheels themselves are
# installed once with a Python 3.12 to prove their tags fit that interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.gpu/mimic-venv
CARRY=.gpu/carry
TWINS=.gpu/mimic-wheels   # the carried wheels' names and versions, built for the venv's Python
PY311=${MIMIC_PYTHON:-$HOME/.pyenv/versions/3.11.7/bin/python3.11}
PY312=${MIMIC_PYTHON312:-$HOME/.pyenv/versions/3.12.1/bin/python3.12}
TORCH_WHEEL=${MIMIC_TORCH:-torch==2.13.0}   # the local CPU wheel; never an unpinned torch (GBs of CUDA)
# The GPU machine's packages that whisperctl, its tests and the benchmark scripts import, directly or through
# transformers (versions from KINDS.md where it gives them; numpy 2.5.2 is not on the index here: 2.4.x).
DEVICE_PACKAGES=(transformers==5.17.0 huggingface_hub==1.33.0 tokenizers==0.23.2 safetensors==0.8.0 accelerate==1.15.0
  "numpy>=2.4,<2.6" typer rich psutil packaging scipy numba scikit-learn joblib lazy-loader msgpack requests click
  typing-extensions pytest pyyaml regex tqdm filelock fsspec setuptools wheel nvidia-ml-py)

build_venv() {
  rm -rf "$VENV"
  "$PY311" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "$TORCH_WHEEL"
  "$VENV/bin/python" -c 'import torch; assert "+cpu" in torch.__version__ or not torch.version.cuda, torch.__version__'
  "$VENV/bin/python" -m pip install -q "${DEVICE_PACKAGES[@]}"
  touch "$VENV/.built"
}

twin_wheels() {  # the carried wheels' name==version, downloaded for the venv's interpreter
  rm -rf "$TWINS"; mkdir -p "$TWINS"
  local specs=()
  for w in "$CARRY"/wheels/*.whl; do
    local base; base=$(basename "$w")
    specs+=("$(echo "$base" | cut -d- -f1)==$(echo "$base" | cut -d- -f2)")
  done
  "$VENV/bin/python" -m pip download -q --no-deps --only-binary=:all: -d "$TWINS" "${specs[@]}"
  diff <(ls "$CARRY"/wheels | cut -d- -f1,2 | sort) <(ls "$TWINS" | cut -d- -f1,2 | sort) \
    || { echo "mimic: the 3.11 twins differ from the carried wheels"; exit 1; }
}

check_carried_wheels_on_312() {  # the carried wheels' tags fit a CPython 3.12 on x86-64 Linux
  [ -x "$PY312" ] || { echo "mimic: no Python 3.12 at $PY312; skipping the tag check of the carried wheels"; return; }
  local tmp; tmp=$(mktemp -d)
  "$PY312" -m pip install -q --no-index --no-deps --no-compile --target "$tmp" "$CARRY"/wheels/*.whl
  echo "mimic: the carried wheels install on $("$PY312" --version)"
  rm -rf "$tmp"
}

[ -d "$CARRY/wheels" ] || { echo "mimic: $CARRY is missing; build it first: python benchmarks/gpu_assets.py"; exit 2; }
if [ "${1:-}" = "--venv" ] || [ ! -f "$VENV/.built" ]; then build_venv; fi
[ "${1:-}" = "--venv" ] && exit 0
twin_wheels
check_carried_wheels_on_312
"$VENV/bin/python" - <<'PY'   # what the device call sends: the working tree and .gpu/carry, 64 MiB at most
import sys
sys.path.insert(0, "benchmarks")
from gpu_assets import LIMIT_BYTES, travelling_bytes
carried, tree = travelling_bytes()
print(f"mimic: .gpu/carry {carried / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
      f"{(carried + tree) / 2**20:.1f} of {LIMIT_BYTES / 2**20:.0f} MiB")
sys.exit(carried + tree > LIMIT_BYTES)
PY

# The device's budget is 420 s. Here 2 cores are shared with other work, so a toy step can take longer than its
# GPU counterpart; MIMIC_BUDGET_S=840 stretches every share alike when the machine is busy.
BUDGET=${MIMIC_BUDGET_S:-420}
OUT_DIR=.gpu/mimic-out
rm -rf "$OUT_DIR" .gpu/mimic-site .gpu/mimic-cache .gpu/mimic-work; mkdir -p "$OUT_DIR"
started=$SECONDS
# What the device call does, with this machine's stand-ins: the venv's python, the 3.11 twins, a private site
# and cache, an empty Hugging Face home (nothing cached, offline), no PYTHONPATH from the caller.
env -u PYTHONPATH OUT="$OUT_DIR" PYTHON="$VENV/bin/python" GPU_WHEELS="$TWINS" GPU_SITE="$PWD/.gpu/mimic-site" \
    GPU_WORK="$PWD/.gpu/mimic-work" WHISPERCTL_CACHE="$PWD/.gpu/mimic-cache" HF_HOME="$PWD/.gpu/mimic-work/hf" \
    GPU_ACCEPTANCE_DRYRUN=1 GPU_ACCEPTANCE_BUDGET_S="$BUDGET" bash benchmarks/gpu_acceptance.sh
rc=$?
echo "mimic: dry run exit $rc in $((SECONDS - started)) s; $OUT_DIR holds $(find "$OUT_DIR" -type f | wc -l) files:"
ls -la "$OUT_DIR"
# Passed: every step ran to its end (none skipped or stopped by the budget), and each left its result.
"$VENV/bin/python" - "$OUT_DIR" .gpu/mimic-work/steps.tsv <<'PY' || rc=1
import json, sys
from pathlib import Path
out, steps = Path(sys.argv[1]), Path(sys.argv[2]).read_text().splitlines()
problems = [f"step {line.split(chr(9))[0]}: {line.split(chr(9))[1]}" for line in steps if line.split("\t")[1] != "ok"]
load = lambda name: json.loads((out / name).read_text())
checks = {
    "doctor.json has checks": lambda: load("doctor.json")["checks"],
    "pytest.xml collected tests/test_gpu.py": lambda: 'tests="' in (out / "pytest.xml").read_text(),
    "real_weights.json has a CPU reference and rows": lambda: load("real_weights.json")["reference"] and load("real_weights.json")["rows"],
    "bench.json has the matrix and the OOM step": lambda: load("bench.json")["matrix"]["rows"] and load("bench.json")["oom"]["transcribe"],
    "peer.json has the pipeline peer": lambda: load("peer.json")["real"]["results"],
    "machine.json has the auto pick": lambda: load("machine.json")["auto"]["in_effect"],
    "at most 8 files come back": lambda: len([p for p in out.iterdir() if p.is_file()]) <= 8,
}
for name, check in checks.items():
    try:
        ok = bool(check())
    except (OSError, KeyError, ValueError, TypeError) as exc:
        ok, name = False, f"{name} ({type(exc).__name__}: {exc})"
    if not ok:
        problems.append(name)
print("mimic: PASSED: every step ran, every import was found" if not problems else "mimic: FAILED:\n  " + "\n  ".join(problems))
sys.exit(1 if problems else 0)
PY
exit $rc
