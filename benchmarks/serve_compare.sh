#!/usr/bin/env bash
# Side by side on this machine, same weights (the bundled CTranslate2 tiny.en), 2 threads, greedy (beam 1), one
# server at a time with nothing else running:
#   whisperctl serve (batch 8: requests' windows share batches)  |  whisperctl serve --batch-size 1 (no batching)
#   faster-whisper-server 0.0.3 (PyPI; FastAPI over faster-whisper; int8, cpu_threads 2, beam 1), in its own venv
# Usage: benchmarks/serve_compare.sh PEER_VENV OUT.json [CONCURRENCY] [REQUESTS]
#   PEER_VENV: a venv with `pip install faster-whisper-server==0.0.3` (or "" to skip the peer)
set -euo pipefail
cd "$(dirname "$0")/.."
PEER=${1:-}; OUT=${2:-docs/serve-load.json}; LEVELS=${3:-1,4,16}; REQUESTS=${4:-0}
PY=.venv/bin/python
MANIFEST=../shared/speech/MANIFEST.tsv
CT2=$($PY -c "from whisperctl.bench.engines import ct2_directory; print(ct2_directory('tiny.en'))")
PORT=8791

wait_ready() {
  for _ in $(seq 1 240); do
    if $PY - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1] + "/health", timeout=2).status == 200 else 1)
EOF
    sleep 0.5
  done
  echo "server at $1 not ready" >&2; return 1
}

run() {  # label, model field, command...
  local label=$1 model=$2; shift 2
  "$@" > "/tmp/serve-compare-$label.log" 2>&1 &
  local pid=$!
  wait_ready "http://127.0.0.1:$PORT"
  $PY benchmarks/serve_load.py --url "http://127.0.0.1:$PORT" --manifest "$MANIFEST" --model "$model" \
      --concurrency "$LEVELS" --requests "$REQUESTS" --server-pid "$pid" --label "$label" --out "$OUT" ${LOADARGS:-}
  kill -TERM "$pid"; wait "$pid" || true
}

LOADARGS="--inprocess-threads 2" run whisperctl-batched tiny.en .venv/bin/whisperctl serve --port $PORT --threads 2
run whisperctl-batch1 tiny.en .venv/bin/whisperctl serve --port $PORT --threads 2 --batch-size 1
if [ -n "$PEER" ]; then
  CFG=$(mktemp --suffix .yaml)
  cat > "$CFG" <<EOF
batch_size: 1
models:
  - name: tiny.en
    path: $CT2
    model_options: {device: cpu, compute_type: int8, cpu_threads: 2, num_workers: 1}
    transcribe_options: {beam_size: 1}
EOF
  HF_HUB_OFFLINE=1 run faster-whisper-server tiny.en "$PEER/bin/python" -m faster_whisper_server --config "$CFG" \
      --host 127.0.0.1 --port $PORT
  rm -f "$CFG"
fi
