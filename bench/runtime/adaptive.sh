#!/usr/bin/env bash
# Adaptive codecs against a link that slows down and recovers (docs/PERFORMANCE.md, "Adaptive
# codecs"). gpt-tiny on 2 ranks in 2 emulated regions (bench/runtime/adaptive2.json: 500 Mbit/s,
# 1 ms; software shaper), one core and one thread each, 200 steps. From step 5 to step 14 both
# directions of the link move 62.5 Mbit/s (8x slower; a link event timed in steps), from step 15
# the topology's rate again.
#   1. profile this machine (the ranks that compute at once) and plan the job uncompressed, and on
#      the slowed link with --codec auto (int8 where a hop is slower than the compute: the slowed
#      link): what the plan predicts for the compressed link;
#   2. train 200 steps with --codec adaptive, twice (the same link history must give the same
#      codecs at the same steps), and 200 steps uncompressed on the unchanged link (the loss to match);
#   3. print when each link's codec changed, the step time while the link was slow and compressed
#      against the prediction, the final losses; write OUT/adaptive.json.
#
#   bench/runtime/adaptive.sh [OUT (default build/bench-adaptive)] [STAGES: 2 (default) or 4]
# With 4 stages: bench/runtime/adaptive4.json (4 regions, every pair 500 Mbit/s, 1 ms), 4 ranks on
# this host's cores, and the link between stages 1 and 2 slows down.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${1:-build/bench-adaptive}"
STAGES="${2:-2}"
BIN=build/bin
TOPO="bench/runtime/adaptive$STAGES.json"
JOB=examples/jobs/gpt-tiny.json
DATA=examples/gpt/data/kjv-pentateuch.txt
ITERS=200
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
mkdir -p "$OUT"

$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages 1 --schedule 1f1b -o "$OUT/one.json" >/dev/null
# As many ranks profile at once as will compute at once (one per core); ranks beyond the cores take
# turns on them (--shared-compute-slots).
CORES=$(nproc)
mpirun -n $(( STAGES < CORES ? STAGES : CORES )) $BIN/geopipe-train --plan "$OUT/one.json" \
  --profile "$OUT/profile.json" --threads 1 | tail -1
SLOTS=$(( STAGES > CORES ? CORES : 0 ))
$BIN/geopipe plan --topology "$TOPO" --job "$JOB" --stages "$STAGES" --schedule 1f1b --codec none \
  --profile "$OUT/profile.json" --shared-compute-slots "$SLOTS" -o "$OUT/plan.json" | grep predicted
# The slowed link: the one after the middle stage of the plan's placement, both directions, 8x.
read -r A B EVENTS < <(python3 -c "
import json; p = json.load(open('$OUT/plan.json')); l = p['links'][($STAGES - 1) // 2]
a, b = l['region_pair']; t = json.load(open('$TOPO'))
for link in t['links']:
    if {link['a'], link['b']} == {a, b}: link['gbps'] /= 8
json.dump(t, open('$OUT/slow.json', 'w'))
print(a, b, f'{a}>{b}@s5+10=62500kbit;{b}>{a}@s5+10=62500kbit')")
echo "slowed link: $A <-> $B (stages $(( (STAGES - 1) / 2 )) and $(( (STAGES + 1) / 2 ))), steps 5-14"
# The plan for the slowed link: auto compresses the hops slower than the compute (the slowed one).
$BIN/geopipe plan --topology "$OUT/slow.json" --job "$JOB" --stages "$STAGES" --schedule 1f1b --codec auto \
  --profile "$OUT/profile.json" --shared-compute-slots "$SLOTS" -o "$OUT/plan-slow-int8.json" | grep -E "predicted|int8"
LINK="$(( (STAGES - 1) / 2 ))->$(( (STAGES + 1) / 2 ))"
BACK="$(( (STAGES + 1) / 2 ))->$(( (STAGES - 1) / 2 ))"

train() {  # NAME CODEC EVENTS
  mpirun -n "$STAGES" --oversubscribe -x GEOPIPE_EMULATE=software -x GEOPIPE_LINK_EVENTS="$3" $BIN/geopipe-train --plan "$OUT/plan.json" \
    --topology "$TOPO" --data "$DATA" --iters "$ITERS" --threads 1 --codec "$2" --json-log "$OUT/$1.jsonl" \
    --no-progress | grep -E "summary|adaptive codec"
}
train adaptive-1 adaptive "$EVENTS"
train adaptive-2 adaptive "$EVENTS"
train none none ""

python3 - "$OUT" "$LINK" "$BACK" <<'PY'
import json, statistics, sys
out, link, back = sys.argv[1], sys.argv[2], sys.argv[3]
def log(name): return [json.loads(l) for l in open(f"{out}/{name}.jsonl")]
runs = {n: log(n) for n in ("adaptive-1", "adaptive-2", "none")}
def codecs(rows, link): return [r["links"][link].get("codec") for r in rows]
a = runs["adaptive-1"]
changes = {link: [(r["step"], r["links"][link]["codec"], r["links"][link]["codec_next"]) for r in a
                  if "codec_next" in r["links"][link]] for link in (link, back)}
every = [l for l in a[0]["links"] if "codec" in a[0]["links"][l]]
same = all(codecs(runs["adaptive-1"], l) == codecs(runs["adaptive-2"], l) for l in every)
others = {l: sorted(set(codecs(a, l))) for l in every if l not in (link, back)}
slow_int8 = [r["step_s"] for r in a if 5 <= r["step"] <= 14 and r["links"][link]["codec"] == "int8-block"]
slow_none = [r["step_s"] for r in a if 5 <= r["step"] <= 14 and r["links"][link]["codec"] == "none"]
predicted = json.load(open(f"{out}/plan-slow-int8.json"))["predicted"]["iteration_s"]
fast = [r["step_s"] for r in runs["none"] if r["step"] > 20]
loss = {n: rows[-1]["loss"] for n, rows in runs.items()}
res = {"changes": changes, "other_links_codecs": others, "same_codecs_both_runs": same,
       "slow_link_none_step_s": statistics.median(slow_none) if slow_none else None,
       "slow_link_int8_step_s": statistics.median(slow_int8) if slow_int8 else None,
       "predicted_int8_on_slow_link_s": predicted, "unchanged_link_none_step_s": statistics.median(fast),
       "final_loss": loss, "loss_vs_none_pct": 100 * (loss["adaptive-1"] - loss["none"]) / loss["none"]}
for link, ch in changes.items():
    print(f"link {link}: " + ", ".join(f"after step {s} {a} -> {b}" for s, a, b in ch))
print(f"the other links' codecs: {others}")
print(f"same codecs at the same steps in both adaptive runs: {same}")
print(f"step time on the slow link: uncompressed {res['slow_link_none_step_s']:.3f} s, int8 "
      f"{res['slow_link_int8_step_s']:.3f} s (predicted {predicted:.3f} s: "
      f"{res['slow_link_int8_step_s'] / predicted:.2f}x); on the unchanged link uncompressed "
      f"{res['unchanged_link_none_step_s']:.3f} s")
print("final loss: " + ", ".join(f"{n} {v:.4f}" for n, v in loss.items()) +
      f" (adaptive vs none {res['loss_vs_none_pct']:+.2f} %)")
json.dump(res, open(f"{out}/adaptive.json", "w"), indent=1)
PY
