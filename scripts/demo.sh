#!/usr/bin/env bash
# The demo: GPT training across emulated regions. Until the runtime lands it builds geopipe,
# validates the shipped topology and job files and says what the demo will run.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
GEOPIPE=build/bin/geopipe

echo
echo "== geopipe $($GEOPIPE version | head -1 | cut -d' ' -f2): checking the shipped inputs"
$GEOPIPE validate examples/topologies/local4.json examples/topologies/aws6.json \
  examples/jobs/gpt-tiny.json examples/jobs/gpt-1.3b.json examples/jobs/llama-7b.json \
  examples/workloads/mixed6.json
cat <<'MSG'

== What the demo does
  1. plan gpt-tiny (4 layers, d_model 128) on local4: 4 emulated regions joined by
     100-400 Mbit/s, 5-40 ms links; BACE-Pipe picks the region order, layer split and codecs;
  2. launch 4 ranks, one per stage, one per emulated region, with the software WAN shaper;
  3. train until validation loss has clearly dropped, then print the per-stage summary and
     where the checkpoint and trace are.
  Steps 1-3 arrive with the scheduler, comm/launch and runtime parts.
MSG
