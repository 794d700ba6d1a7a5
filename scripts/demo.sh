#!/usr/bin/env bash
# The demo: plan a small GPT on four emulated regions with BACE-Pipe, launch one rank per
# region (software WAN shaper: each region pair's bandwidth and latency from the topology),
# train until validation loss has clearly dropped, then show the summary, the checkpoint and
# the trace. A few minutes on 2 CPU cores.
#
#   GEOPIPE_DEMO_ITERS   training steps (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# Open MPI refuses to run as root unless told it may.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

BIN=build/bin
OUT=build/demo
TOPO=examples/topologies/local4.json
JOB=examples/jobs/gpt-tiny.json
DATA=examples/gpt/data/kjv-pentateuch.txt
ITERS="${GEOPIPE_DEMO_ITERS:-30}"
rm -rf "$OUT" && mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

step "1/4 check the inputs"
$BIN/geopipe validate "$TOPO" "$JOB"

step "2/4 measure this machine: per-layer forward/backward times of $JOB (one process)"
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 1 -o "$OUT/one-stage.json" >/dev/null
$BIN/geopipe-train --plan "$OUT/one-stage.json" --data "$DATA" --profile "$OUT/profile.json" --threads 1

step "3/4 plan: BACE-Pipe picks the regions' order, the layer split, codecs and warm-up depths"
# The emulated regions share this host's cores (one LibTorch thread per rank): the cost model lets
# the stages take turns on them, so the predicted iteration time is this host's.
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --profile "$OUT/profile.json" \
  --shared-compute-slots "$(nproc)" -o "$OUT/plan.json"

step "4/4 train: 4 ranks, one per emulated region, $ITERS steps"
$BIN/geopipe launch --plan "$OUT/plan.json" --topology "$TOPO" --emulate software --timeout 1800 -- \
  "$BIN/geopipe-train" --plan "$OUT/plan.json" --topology "$TOPO" --data "$DATA" \
  --iters "$ITERS" --lr 2e-3 --warmup 5 --eval-every 10 --eval-batches 8 \
  --json-log "$OUT/train.jsonl" --trace "$OUT/trace.json" \
  --checkpoint-dir "$OUT/checkpoint" --checkpoint-every 10

cat <<MSG

== done
  plan:        $OUT/plan.json
  step log:    $OUT/train.jsonl   (one JSON object per step)
  trace:       $OUT/trace.json    (open in https://ui.perfetto.dev or chrome://tracing)
  checkpoint:  $OUT/checkpoint/   (resume with --resume; export with geopipe-train --export)
MSG
