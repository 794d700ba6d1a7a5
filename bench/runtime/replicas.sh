#!/usr/bin/env bash
# Stage replicas (docs/PERFORMANCE.md, "Stage replicas"): gpt-tiny, one stage, 2 data-parallel
# replicas (one rank per core, one thread each) against one rank doing both replicas' micro-batches
# on one core. Reports per step (median over the steps after the first 3): step time, the gradient
# all-reduce time (first bucket's start to the last one's end, rank 0) and the part of it OPT waited
# for (not hidden behind the backward); the speed-up of DP2 over one rank; each rank's optimizer
# state (from the run's summary). Writes OUT/replicas.json.
#
#   bench/runtime/replicas.sh [OUT (default build/bench-replicas)] [ITERS (default 30)] [--shard-optimizer]
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/bench-replicas}"
ITERS="${2:-30}"
SHARD="${3:-}"
BIN=build/bin
TOPO=bench/runtime/replicas-topology.json
JOB=examples/jobs/gpt-tiny.json
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"
M=$(python3 -c "import json; print(json.load(open('$JOB'))['micro_batches'])")
python3 -c "
import json; j = json.load(open('$JOB')); j['micro_batches'] = 2 * j['micro_batches']; j['name'] += '-2m'
json.dump(j, open('$OUT/job-2m.json', 'w'))"
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 1 --replicas 2 --schedule 1f1b -o "$OUT/dp2.json" >/dev/null
$BIN/geopipe plan --topology "$TOPO" --job "$OUT/job-2m.json" --stages 1 --schedule 1f1b -o "$OUT/one.json" >/dev/null
mpirun -n 2 --bind-to core $BIN/geopipe-train --plan "$OUT/dp2.json" --iters "$ITERS" --threads 1 --no-progress \
  --json-log "$OUT/dp2.jsonl" $SHARD >"$OUT/dp2.out"
mpirun -n 1 --bind-to core $BIN/geopipe-train --plan "$OUT/one.json" --iters "$ITERS" --threads 1 --no-progress \
  --json-log "$OUT/one.jsonl" >/dev/null
python3 - "$OUT" "$M" <<'PY'
import json, statistics, sys
out, M = sys.argv[1], int(sys.argv[2])
def steps(name):
    return [json.loads(l) for l in open(f"{out}/{name}.jsonl")][3:]
dp, one = steps("dp2"), steps("one")
med = lambda rows, k: statistics.median(r.get(k, 0.0) for r in rows)
r = {"micro_batches_per_replica": M, "dp2_step_s": med(dp, "step_s"), "one_rank_step_s": med(one, "step_s"),
     "allreduce_s": med(dp, "allreduce_s"), "allreduce_exposed_s": med(dp, "allreduce_exposed_s"),
     "dp2_final_loss": dp[-1]["loss"], "one_rank_final_loss": one[-1]["loss"]}
# The summary's per-rank optimizer column (AdamW's moments; ZeRO-1 keeps 1/R of them per rank).
units = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
rows = [l.split() for l in open(f"{out}/dp2.out") if l.startswith("  0/")]
r["optimizer_state_bytes_per_rank"] = [float(w[5]) * units[w[6]] for w in rows]
r["exposed_fraction"] = r["allreduce_exposed_s"] / r["allreduce_s"] if r["allreduce_s"] else 0
r["speedup"] = r["one_rank_step_s"] / r["dp2_step_s"]
print(f"{'run':<28}{'s/step':>10}{'all-reduce s':>14}{'exposed s':>11}{'exposed':>9}{'loss':>9}")
print(f"{'DP2 x PP1 (2 ranks)':<28}{r['dp2_step_s']:>10.4f}{r['allreduce_s']:>14.4f}{r['allreduce_exposed_s']:>11.4f}"
      f"{100 * r['exposed_fraction']:>8.1f}%{r['dp2_final_loss']:>9.4f}")
print(f"{'one rank, 2M micro-batches':<28}{r['one_rank_step_s']:>10.4f}{'':>14}{'':>11}{'':>9}{r['one_rank_final_loss']:>9.4f}")
print(f"speed-up of DP2 over one rank: {r['speedup']:.2f}x (ideal 2x)")
print("optimizer state per rank (AdamW moments): " + ", ".join(f"{b / 1e6:.2f} MB" for b in r["optimizer_state_bytes_per_rank"]))
json.dump(r, open(f"{out}/replicas.json", "w"), indent=2)
PY
