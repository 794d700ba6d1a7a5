#!/usr/bin/env bash
# The demo: plan a small GPT on four emulated regions with BACE-Pipe, launch one rank per
# region (software WAN shaper: each region pair's bandwidth and latency from the topology),
# train it until it writes recognisable text (validation loss 5.5 -> about 1.3 nats per byte),
# then show the summary, the checkpoint, the trace and a sample of its writing, and write the
# run's report (one HTML page, offline: loss, links, bubbles, cost, prediction). About 3 minutes
# after the build on 2 CPU cores (docs/PERFORMANCE.md, "The demo").
#
# The model is gpt-tiny (examples/jobs/gpt-tiny.json: 4 layers, d_model 128, 4 heads, a context
# of 64 bytes, 8 micro-batches of 8 sequences = 4,096 tokens per step), trained on the shipped
# corpus (the King James Pentateuch, read byte by byte) for 600 steps at a peak learning rate of
# 3e-3 (20 warm-up steps, cosine to 1e-4).
#
#   GEOPIPE_DEMO_ITERS   training steps (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

# Open MPI refuses to run as root unless told it may.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

BIN=build/bin
OUT=build/demo
TOPO=examples/topologies/local4.json
JOB=examples/jobs/gpt-tiny.json
ITERS="${GEOPIPE_DEMO_ITERS:-600}"
RUN="$OUT/run"   # every file of the training run: plan, topology, run.json, log, trace, summary, checkpoint
rm -rf "$OUT" && mkdir -p "$OUT"

step() { printf '\n== %s\n' "$*"; }

step "1/6 check the inputs"
$BIN/geopipe validate "$TOPO" "$JOB"

step "2/6 measure this machine: per-layer forward/backward times of $JOB (one process)"
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 1 -o "$OUT/one-stage.json" >/dev/null
$BIN/geopipe-train --plan "$OUT/one-stage.json" --profile "$OUT/profile.json" --threads 1

step "3/6 plan: BACE-Pipe picks the regions' order, the layer split, codecs and warm-up depths"
# The emulated regions share this host's cores (one LibTorch thread per rank): the cost model lets
# the stages take turns on them, so the predicted iteration time is this host's.
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --profile "$OUT/profile.json" \
  --shared-compute-slots "$(nproc)" -o "$OUT/plan.json"

step "4/6 train: 4 ranks, one per emulated region, $ITERS steps"
$BIN/geopipe launch --plan "$OUT/plan.json" --topology "$TOPO" --emulate software --timeout 1800 -- \
  "$BIN/geopipe-train" --plan "$OUT/plan.json" --topology "$TOPO" \
  --iters "$ITERS" --lr 3e-3 --min-lr 1e-4 --warmup 20 --eval-every 100 --eval-batches 16 \
  --run-dir "$RUN" --checkpoint-every 200

step "5/6 write: 400 bytes from the trained model (one process reads all four stages' files)"
$BIN/geopipe-train --plan "$OUT/one-stage.json" --checkpoint-dir "$RUN/checkpoint" --threads "$(nproc)" \
  --sample 400 --prompt "And God said" --temperature 0.8 --top-k 20

step "6/6 see it: one self-contained HTML page of the run (no network needed)"
$BIN/geopipe report "$RUN"

cat <<MSG

== done
  plan:        $RUN/plan.json
  step log:    $RUN/train.jsonl   (one JSON object per step)
  trace:       $RUN/trace.json    (open in https://ui.perfetto.dev or chrome://tracing)
  checkpoint:  $RUN/checkpoint/   (resume with --resume; export with geopipe-train --export)
  report:      $RUN/report.html   (open in any browser)
MSG
