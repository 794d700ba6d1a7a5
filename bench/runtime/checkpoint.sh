#!/usr/bin/env bash
# Asynchronous checkpoints (docs/PERFORMANCE.md, "Checkpoints"): one rank trains JOB for ITERS
# steps, checkpointing every 2 steps. Reports what a checkpoint costs the training loop (host copy
# of parameters and AdamW state, plus the wait for the files and the manifest a step later) as a
# share of a step, and the background write time, from the JSON log. Writes OUT/checkpoint.json.
#
#   bench/runtime/checkpoint.sh [OUT (default build/bench-checkpoint)] [ITERS (default 20)] [JOB (default gpt-tiny)]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/bench-checkpoint}"
ITERS="${2:-20}"
JOB="${3:-examples/jobs/gpt-tiny.json}"
BIN=build/bin
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rm -rf "$OUT" && mkdir -p "$OUT"
$BIN/geopipe plan --topology bench/runtime/replicas-topology.json --job "$JOB" --stages 1 --schedule 1f1b \
  -o "$OUT/plan.json" >/dev/null
$BIN/geopipe-train --plan "$OUT/plan.json" --iters "$ITERS" --threads 1 --no-progress --json-log "$OUT/run.jsonl" \
  --checkpoint-dir "$OUT/ckpt" --checkpoint-every 2 >/dev/null
python3 - "$OUT" "$JOB" <<'PY'
import json, os, statistics, sys
out, job = sys.argv[1], sys.argv[2]
rows = [json.loads(l) for l in open(f"{out}/run.jsonl")][1:]   # step 1 warms up
# Checkpoints begin after even steps and are named at the end of the odd step after; a pair of
# steps carries one checkpoint's whole cost to the loop.
pairs = [(a, b) for a, b in zip(rows, rows[1:]) if a["step"] % 2 == 0 and "checkpoint_write_s" in b]
blocked = [a.get("checkpoint_blocked_s", 0) + b.get("checkpoint_blocked_s", 0) for a, b in pairs]
write = [b["checkpoint_write_s"] for a, b in pairs]
step = statistics.median(r["step_s"] - r.get("checkpoint_blocked_s", 0) for r in rows)
ckpt = os.path.join(out, "ckpt")
size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(ckpt) for f in fs
           if f.endswith(".pt") and os.path.basename(d) == sorted(os.listdir(ckpt))[-2])
r = {"job": job, "checkpoints": len(pairs), "step_s": step, "blocked_s": statistics.median(blocked),
     "write_s": statistics.median(write), "checkpoint_bytes": size}
r["blocked_fraction_of_step"] = r["blocked_s"] / step
print(f"{'job':<34}{'step s':>9}{'blocked s':>11}{'% of step':>11}{'write s':>10}{'MB':>8}")
print(f"{os.path.basename(job):<34}{step:>9.4f}{r['blocked_s']:>11.4f}{100 * r['blocked_fraction_of_step']:>10.1f}%"
      f"{r['write_s']:>10.4f}{size / 1e6:>8.1f}")
json.dump(r, open(f"{out}/checkpoint.json", "w"), indent=2)
PY
