#!/usr/bin/env bash
# Every schedule over one 40 ms link (docs/PERFORMANCE.md, "Schedules over a 40 ms link"): the
# zero-bubble benchmark. 2 ranks in 2 emulated regions (one core and one thread each, software
# WAN shaper: 1 Gbit/s, 40 ms one way), job bench/runtime/gpt-zb.json (8 blocks of d_model 256,
# 8 micro-batches of 8 x 128 tokens). Steps:
#   1. profile this machine as the run will use it: 2 ranks at once, one thread each;
#   2. one plan per schedule kind on the same placement (geopipe plan predicts each by replaying it);
#   3. geopipe-pipeline-bench over all plans, RUNS times; then the median over runs per schedule.
#
#   bench/runtime/schedules.sh [RUNS (default 3)] [OUT (default build/bench-schedules)]
# After the build (scripts/setup.sh). Prints one table per run and the medians; writes
# OUT/run-N.json (the bench's rows) and OUT/medians.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUNS="${1:-3}"
OUT="${2:-build/bench-schedules}"
BIN=build/bin
TOPO=bench/runtime/wan40.json
JOB=bench/runtime/gpt-zb.json
DATA=examples/gpt/data/kjv-pentateuch.txt
KINDS="1f1b zb-h1 zbv 1f1b-lh gpipe interleaved"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"

$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 1 --schedule 1f1b -o "$OUT/one.json" >/dev/null
mpirun -n 2 $BIN/geopipe-train --plan "$OUT/one.json" --profile "$OUT/profile.json" --threads 1 | tail -1

plans=""
for kind in $KINDS; do
  $BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 2 --profile "$OUT/profile.json" \
    --schedule "$kind" -o "$OUT/$kind.json" | grep predicted
  plans="$plans${plans:+,}$OUT/$kind.json"
done

for run in $(seq 1 "$RUNS"); do
  echo "== run $run of $RUNS"
  mpirun -n 2 -x GEOPIPE_EMULATE=software $BIN/geopipe-pipeline-bench --topology "$TOPO" --data "$DATA" \
    --plans "$plans" -n 5 -w 1 --threads 1 --json "$OUT/run-$run.json"
done

# Medians over the runs, and each schedule against 1F1B.
python3 - "$OUT" "$RUNS" <<'PY'
import json, statistics, sys
out, runs = sys.argv[1], int(sys.argv[2])
rows = {}
for r in range(1, runs + 1):
    for row in json.load(open(f"{out}/run-{r}.json")):
        rows.setdefault(row["schedule"], []).append(row)
base = statistics.median(x["measured_median_s"] for x in rows["1f1b"])
print(f"== medians over {runs} runs")
print(f"{'schedule':<12} {'V':>2} {'predicted(s)':>12} {'measured(s)':>11} {'gap(%)':>7} {'vs 1f1b(%)':>10} "
      f"{'peak pred':>9} {'peak meas':>9} {'peak MB':>8}")
medians = []
for kind, xs in rows.items():
    m = statistics.median(x["measured_median_s"] for x in xs)
    p = xs[0]["predicted_s"]
    row = {"schedule": kind, "virtual_stages": xs[0]["virtual_stages"], "predicted_s": p, "measured_s": m,
           "gap_pct": 100 * (m - p) / p, "faster_than_1f1b_pct": 100 * (base - m) / base,
           "predicted_peak_activations": xs[0]["predicted_peak_activations"],
           "measured_peak_activations": max(x["measured_peak_activations"] for x in xs),
           "measured_peak_activation_mb": max(x["measured_peak_activation_mb"] for x in xs), "runs": len(xs)}
    medians.append(row)
    print(f"{kind:<12} {row['virtual_stages']:>2} {p:>12.3f} {m:>11.3f} {row['gap_pct']:>7.1f} "
          f"{row['faster_than_1f1b_pct']:>10.1f} {row['predicted_peak_activations']:>9} "
          f"{row['measured_peak_activations']:>9} {row['measured_peak_activation_mb']:>8.1f}")
json.dump(medians, open(f"{out}/medians.json", "w"), indent=1)
PY
