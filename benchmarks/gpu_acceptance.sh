#!/usr/bin/env bash
# GPU acceptance (issue "GPU acceptance"): everything whisperctl claims about CUDA, run on a bare GPU machine.
#
# Here, once:   .venv/bin/python benchmarks/gpu_assets.py        # builds .gpu/ (model, speech, wheels; ~52 MiB)
# On the GPU:   bash benchmarks/gpu_acceptance.sh part1          # doctor, pytest -m gpu, real weights, peer (real)
#               bash benchmarks/gpu_acceptance.sh part2          # bench matrix, a real OOM, auto pick
# Each part fits one device call of < 10 minutes (the device call names .gpu in carry); results go to $OUT.
# With GPU_ACCEPTANCE_DRYRUN=1 it runs every step on the CPU at toy sizes (to check the wiring, not to measure).
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: gpu_acceptance.sh part1|part2}
OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT"
LOG="$OUT/$part.log"
exec > >(tee -a "$LOG") 2>&1
DRY=${GPU_ACCEPTANCE_DRYRUN:-}
PY=${PYTHON:-python3}
BUDGET=${GPU_ACCEPTANCE_BUDGET_S:-540}   # stop starting steps after this many seconds (the call's limit is 600)

if [ -z "$DRY" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  DEVICE=cuda; DTYPES=fp16,bf16; MINUTES=10; PEER_MINUTES=30; TOKENS=64
else
  export PYTHONPATH=$PWD
  DEVICE=cpu; DTYPES=fp32; MINUTES=0.5; PEER_MINUTES=0.5; TOKENS=4
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WHISPERCTL_CACHE=/tmp/whisperctl-cache
export WHISPERCTL_GPU_MODEL=$PWD/.gpu/tiny.en-int8
MODEL=$WHISPERCTL_GPU_MODEL
W() { $PY -c "from whisperctl.cli import main; main()" "$@"; }
step() {  # step NAME COMMAND…: run it unless the budget is spent; its status goes to the log either way
  local name=$1; shift
  if [ "$SECONDS" -ge "$BUDGET" ]; then echo "=== $name: SKIPPED (budget of ${BUDGET}s spent)"; return; fi
  echo "=== $name (t=${SECONDS}s)"
  "$@"; echo "=== $name: exit $? (t=${SECONDS}s)"
}

case "$part" in
part1)
  step "machine" bash -c "nvidia-smi || true; $PY -c 'import torch, transformers; print(torch.__version__, torch.version.cuda, transformers.__version__)'; lscpu | head -20"
  step "doctor" bash -c "W() { $PY -c 'from whisperctl.cli import main; main()' \"\$@\"; }; W doctor --model large-v3 > '$OUT/doctor.txt'; W doctor --model large-v3 --json > '$OUT/doctor.json'; cat '$OUT/doctor.txt'"
  step "pytest -m gpu" $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs
  step "real weights" $PY benchmarks/gpu_real_weights.py "$MODEL" .gpu/speech "$OUT" --device $DEVICE
  step "peer, real weights" $PY benchmarks/gpu_peer.py real "$MODEL" .gpu/speech/lj231.flac .gpu/speech/references.tsv "$OUT" --minutes $PEER_MINUTES --device $DEVICE
  ;;
part2)
  bench() { W bench --weights random --device $DEVICE --dtypes $DTYPES --duration $(awk "BEGIN{print $MINUTES*60}") \
              --decode-tokens $TOKENS --warmup 1 --repeats 2 "$@"; }
  if [ -z "$DRY" ]; then ATTNS=eager,sdpa,sdpa:flash,sdpa:efficient,sdpa:cudnn,fa2; BATCHES=1,8,24; else ATTNS=eager,sdpa,fa2; BATCHES=1,2; fi
  # one model per invocation, so what finished is saved when the budget runs out
  for m in large-v3 distil-large-v3 large-v3-turbo; do
    [ -n "$DRY" ] && m=tiny
    step "bench $m" bench --models $m --compare $ATTNS --batch-sizes $BATCHES --json "$OUT/bench-$m.json" --markdown "$OUT/bench-$m.md"
    [ -n "$DRY" ] && break
  done
  # a real out-of-memory: a batch that cannot fit is an "OOM at batch N" row, and transcribe halves and goes on
  if [ -z "$DRY" ]; then OOM_MODEL=large-v3; OOM_BATCH=256; else OOM_MODEL=tiny; OOM_BATCH=4; fi
  step "bench OOM row" bench --models $OOM_MODEL --dtypes ${DTYPES%%,*} --compare sdpa --batch-sizes $OOM_BATCH --json "$OUT/bench-oom.json" --markdown "$OUT/bench-oom.md"
  step "pytest OOM halving" $PY -m pytest -q -p no:cacheprovider -m gpu "tests/test_gpu.py::test_a_real_out_of_memory_halves_the_batch"
  step "auto pick" bash -c "W() { $PY -c 'from whisperctl.cli import main; main()' \"\$@\"; }; W transcribe examples/short.wav --model $MODEL --device $DEVICE -f json -q | $PY -c 'import json,sys; r=json.load(sys.stdin)[\"runtime\"]; print(\"auto picked:\", r[\"attention\"], r[\"dtype\"], \"-\", r[\"attention_reason\"])' | tee '$OUT/auto.txt'"
  ;;
*) echo "unknown part $part (part1 | part2)"; exit 2 ;;
esac
echo "done in ${SECONDS}s; results in $OUT"
