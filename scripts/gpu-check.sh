#!/usr/bin/env bash
# The one-command GPU check. On a machine with an NVIDIA GPU and PyTorch 2.x (whose LibTorch, built
# with CUDA, is what geopipe links against here) it:
#   1. configures a CUDA build (Release, Ninja, -DGEOPIPE_CUDA=ON, CMAKE_CUDA_ARCHITECTURES from the
#      device's compute capability, Torch_DIR = PyTorch's LibTorch) into build-gpu/,
#   2. builds only what the check runs (geopipe, geopipe-train, geopipe-codec-bench, the GPU tests),
#   3. runs the GPU tests through ctest (CUDA codecs bit for bit against the CPU twins, the LibTorch
#      adapter on CUDA tensors, NCCL self-send, a one-rank NCCL replica group's all-reduce,
#      reduce-scatter and all-gather, staging through pinned memory),
#   4. runs `geopipe-codec-bench --device cuda`,
#   5. trains a small GPT on the GPU for 20 steps (bf16, int8 codec on the links): 2 stages on two
#      emulated regions of local4 sharing the one GPU (`geopipe launch --emulate software`), the
#      same 2 stages without WAN emulation, and 1 stage for comparison,
# and writes every figure, version and step (exit status, seconds, last log lines of a failed
# step) to OUT/gpu-check.json, all step logs to OUT/gpu-check.log, and prints a short table last.
# About 5-6 minutes on an H200 machine with 16 cores; the script stops itself within 8 minutes
# (GEOPIPE_GPU_CHECK_BUDGET_S, default 470 s): every step runs under `timeout` with what is left.
# Exit status: 0 when every required step passed, 1 otherwise.
#
# Without a GPU it says so, configures (does not build) the CUDA build against PyTorch's LibTorch
# when that has CUDA, else Debian's, writes the JSON with gpu=false and exits 0 when the
# configuration succeeded (1 when it failed). Without nvcc too it says so and exits 0.
#
#   scripts/gpu-check.sh [--out DIR] [--build-dir DIR]
#     --out DIR         where gpu-check.json and gpu-check.log go (default: $OUT when set, else
#                       build-gpu/check); the step logs and inputs stay in BUILD_DIR/gpu-check/
#     --build-dir DIR   CMake build folder (default: build-gpu)
#   GEOPIPE_CMAKE_ARGS          extra CMake arguments
#   GEOPIPE_GPU_CHECK_BUDGET_S  time budget of the whole check in seconds (default 470)
#   GEOPIPE_PYTHON              the python3 that has PyTorch (default: python3, then /usr/bin/python3)
#
# Missing Open MPI / spdlog / fmt / nlohmann-json / CLI11 / GoogleTest (a GPU machine without
# internet): with .gpu/use-debs.sh and .debs/*.deb in the checkout (../shared/gpu/README.md) the
# .deb files are unpacked into a prefix and used; otherwise the script names what is missing.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

out_arg="" build_arg=""
while (($#)); do
  case "$1" in
    --out) out_arg=${2:?--out needs a folder}; shift 2 ;;
    --out=*) out_arg=${1#--out=}; shift ;;
    --build-dir) build_arg=${2:?--build-dir needs a folder}; shift 2 ;;
    --build-dir=*) build_arg=${1#--build-dir=}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument \"$1\" (--out DIR, --build-dir DIR, --help)" >&2; exit 2 ;;
  esac
done
# Paths given on the command line are relative to where the script was started.
[[ -n "$out_arg" ]] && out_arg=$(realpath -m -- "$out_arg")
[[ -n "$build_arg" ]] && build_arg=$(realpath -m -- "$build_arg")
cd "$(dirname "$0")/.."
REPO=$(pwd)
BUILD=${build_arg:-$REPO/build-gpu}
OUTDIR=${out_arg:-${OUT:-$BUILD/check}}
WORK=$BUILD/gpu-check          # step logs, plans, job file, raw results
BIN=$BUILD/bin
TOPO=examples/topologies/local4.json
DATA=examples/gpt/data/kjv-pentateuch.txt
ITERS=20
BUDGET=${GEOPIPE_GPU_CHECK_BUDGET_S:-470}
JSON=$OUTDIR/gpu-check.json
FULL_LOG=$OUTDIR/gpu-check.log
# the GPU tests (ctest names) and the build targets behind them
GPU_TESTS=(kernels_device_test kernels_codec_cuda_test kernels_torch_codec_test comm_nccl_test_np1 comm_gpu_staging_test_np1
           runtime_device_memory_test)
TARGETS=(geopipe geopipe-train geopipe-codec-bench kernels_device_test kernels_codec_cuda_test
         kernels_torch_codec_test comm_nccl_test comm_gpu_staging_test runtime_device_memory_test)
GPU_TEST_RE="^($(IFS='|'; echo "${GPU_TESTS[*]}"))\$"
export GPU_TEST_RE

mkdir -p "$OUTDIR" "$BUILD"
rm -rf "$WORK"
mkdir -p "$WORK/logs"
rm -f "$JSON" "$FULL_LOG"
: >"$WORK/steps.tsv"
: >"$WORK/vars.tsv"
START=$SECONDS
NSTEP=0

say() { echo "gpu-check: $*"; }
setvar() { printf '%s\t%s\n' "$1" "$(printf '%s' "${2:-}" | tr '\t\n' '  ')" >>"$WORK/vars.tsv"; }
left() { echo $((BUDGET - (SECONDS - START))); }
# cap WANT: seconds a step may take: WANT, or what is left of the budget (10 s kept for the report)
cap() { local l; l=$(($(left) - 10)); echo $(($1 < l ? $1 : l)); }

# ---- the report: one Python program (standard library only) merges everything into the JSON ----
cat >"$WORK/report.py" <<'PY'
import json, os, re, statistics, sys, time

work, out_json, final = sys.argv[1], sys.argv[2], sys.argv[3] == "final"

def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default

def tail(path, n=40):
    return read(path).splitlines()[-n:]

def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

info = {}
for line in read(os.path.join(work, "vars.tsv")).splitlines():
    k, _, v = line.partition("\t")
    info[k] = v

steps = []
for line in read(os.path.join(work, "steps.tsv")).splitlines():
    name, required, status, rc, seconds, log = line.split("\t")
    s = {"name": name, "required": required == "1", "status": status, "exit_status": int(rc),
         "seconds": float(seconds), "log": log}
    if status != "ok" and log:
        s["log_tail"] = tail(log)
    steps.append(s)
by_name = {s["name"]: s for s in steps}

def step_log(name):
    s = by_name.get(name)
    return read(s["log"]) if s and s["log"] else ""

# ---- GPU tests: ctest's per-test lines and GoogleTest's skips (with the reason) ----------------
def parse_ctest(text, expected, gpu):
    tests = {}
    for m in re.finditer(r"Test\s+#\d+: (\S+) \.+\s*(?:\*+)?(\S.*?)\s+([\d.]+) sec\s*$", text, re.M):
        tests[m.group(1)] = {"status": m.group(2).strip(), "seconds": float(m.group(3))}
    skipped, current, reason, in_skip = [], None, [], False
    for raw in text.splitlines():
        line = re.sub(r"^\d+: ", "", raw)
        m = re.match(r"\[ RUN      \] (\S+)", line)
        if m:
            current, reason, in_skip = m.group(1), [], False
            continue
        m = re.match(r"\[  SKIPPED \] (\S+) \(\d+ ms\)", line)
        if m:
            skipped.append({"test": m.group(1), "reason": " ".join(reason).strip()})
            current, in_skip = None, False
            continue
        if current and re.search(r": Skipped$", line):
            in_skip = True
            continue
        if current and in_skip and not line.startswith("["):
            reason.append(line.strip())
    # With a GPU, only the "refuses without a GPU" tests may skip.
    unexpected = [s for s in skipped if gpu and "a GPU is present" not in s["reason"]]
    missing = [t for t in expected if t not in tests]
    ok = bool(tests) and not missing and all(t["status"] == "Passed" for t in tests.values()) and not unexpected
    return {"ok": ok, "tests": tests, "missing": missing, "skipped": skipped, "unexpected_skips": unexpected}

# ---- codec bench: its JSON, plus the reference lines it prints --------------------------------
def codec_figures():
    j = load_json(os.path.join(work, "codec-bench.json"))
    if j is None:
        return None
    text = step_log("codec_bench")
    copies = {m.group(1): {"bytes": int(m.group(2)), "us": float(m.group(3)), "gbps": float(m.group(4))}
              for m in re.finditer(r"# (\S+): device-to-device copy of (\d+) B: ([\d.]+) us, ([\d.]+) GB/s", text)}
    peak = re.search(r"HBM peak ([\d.]+) GB/s", text)
    rows = j.get("rows", [])
    largest = max(rows, key=lambda r: r["numel"])["shape"] if rows else None
    summary = {}
    for r in rows:
        c = summary.setdefault(r["codec"], {"wrong_bytes": 0, "max_rel_l2": 0.0})
        c["wrong_bytes"] += max(0, r["wrong"])
        c["max_rel_l2"] = max(c["max_rel_l2"], r["rel_l2"])
        if r["shape"] == largest:
            c[r["op"] + "_gbps"] = r["gbps"]
            c[r["op"] + "_us"] = r["time_us"]
            c[r["op"] + "_pct_of_d2d_copy"] = r["copy_pct"]
            if r["eager_us"] > 0:
                c[r["op"] + "_eager_us"] = r["eager_us"]
    return {"largest_shape": largest, "per_codec_at_largest_shape": summary,
            "hbm_peak_gbps": float(peak.group(1)) if peak else None, "d2d_copy": copies, "bench": j}

# ---- training runs: the per-step JSON log and the trainer's summary --------------------------
def training(run):
    path = os.path.join(work, f"train-{run}.jsonl")
    recs = []
    for line in read(path).splitlines():
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
    text = step_log(f"train_{run}")
    summ, grab = [], False
    for line in text.splitlines():
        if line.startswith("summary:"):
            grab = True
        if grab:
            if not line.strip() or line.startswith("[") or len(summ) > 20:
                break
            summ.append(line.rstrip())
    if not recs:
        return {"steps": 0, "summary": summ} if summ else None
    steady = recs[3:] if len(recs) > 5 else recs   # the first steps include cuBLAS/NCCL warm-up
    st = [r["step_s"] for r in steady]
    tok = [r["tokens_per_s"] for r in steady]
    res = {"steps": len(recs), "loss_first": recs[0]["loss"], "loss_last": recs[-1]["loss"],
           "val_loss": next((r["val_loss"] for r in reversed(recs) if "val_loss" in r), None),
           "steady_from_step": steady[0]["step"],
           "step_s_median": statistics.median(st), "step_s_mean": statistics.fmean(st),
           "tokens_per_s_median": statistics.median(tok), "first_step_s": recs[0]["step_s"],
           "elapsed_s": recs[-1].get("elapsed_s"), "links_last_step": recs[-1].get("links"),
           "summary": summ, "per_step": recs}
    return res

gpu = info.get("gpu") == "true"
doc = {"tool": "scripts/gpu-check.sh", "schema": 1, "partial": not final,
       "started": info.get("started"), "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
       "elapsed_s": round(time.time() - float(info.get("start_epoch", time.time())), 1),
       "gpu": gpu, "gpu_detection": info.get("gpu_detection"),
       "configure": by_name["configure"]["status"] if "configure" in by_name else info.get("configure", "not run"),
       "host": {k[5:]: v for k, v in info.items() if k.startswith("host_")},
       "device": {k[7:]: v for k, v in info.items() if k.startswith("device_")},
       "toolchain": {k[5:]: v for k, v in info.items() if k.startswith("tool_")},
       "torch": load_json(os.path.join(work, "probe.json")),
       "dependencies": {k[5:]: v for k, v in info.items() if k.startswith("deps_")},
       "build": {k[6:]: v for k, v in info.items() if k.startswith("build_")},
       "steps": steps}
if "gpu_tests" in by_name or "targets" in by_name:
    name = "gpu_tests" if "gpu_tests" in by_name else "targets"
    expected = info.get("gpu_tests", "").split()
    if name == "gpu_tests":
        doc["gpu_tests"] = parse_ctest(step_log(name), expected, gpu)
    else:  # configure only: the tests are listed (ctest -N), not run
        listed = re.findall(r"Test\s+#\d+: (\S+)\s*$", step_log(name), re.M)
        missing = [t for t in expected if t not in listed]
        doc["gpu_tests"] = {"ok": not missing, "listed_not_run": listed, "missing": missing}
if gpu:
    doc["codec_bench"] = codec_figures()
    job = load_json(os.path.join(work, "job.json"))
    doc["training"] = {"job": job, "iters": int(info.get("train_iters", 0) or 0), "dtype": "bf16", "codec": "int8",
                       "runs": {r: training(r) for r in ("two_stage_wan", "two_stage_local", "one_stage")}}

failed = [s["name"] for s in steps if s["required"] and s["status"] != "ok"]
if "gpu_tests" in doc and not doc["gpu_tests"]["ok"] and ("gpu_tests" in by_name or "targets" in by_name):
    n = "gpu_tests" if "gpu_tests" in by_name else "targets"
    if n not in failed and by_name[n]["required"]:
        failed.append(n + " (missing or unexpectedly skipped tests)")
doc["failed_required_steps"] = failed
doc["ok"] = not failed
tmp = out_json + ".tmp"
with open(tmp, "w") as f:
    json.dump(doc, f, indent=1)
    f.write("\n")
os.replace(tmp, out_json)
if not final:
    sys.exit(0)

# ---- the short table ------------------------------------------------------------------------
d = doc["device"]
t = doc["torch"] or {}
print()
if gpu:
    print(f"== gpu-check: {d.get('name', '?')} (compute {d.get('compute_cap', '?')}), driver {d.get('driver', '?')}, "
          f"CUDA {d.get('cuda', '?')}, torch {t.get('version', '?')}, nvcc {doc['toolchain'].get('nvcc', '?')}")
else:
    print(f"== gpu-check: no GPU ({doc['gpu_detection']}); nvcc {doc['toolchain'].get('nvcc') or 'absent'}, "
          f"torch {t.get('version', 'absent')}")
print(f"{'step':<22} {'status':<9} {'exit':>4} {'seconds':>8}")
for s in steps:
    print(f"{s['name']:<22} {s['status']:<9} {s['exit_status']:>4} {s['seconds']:>8.1f}{'' if s['required'] else '  (optional)'}")
gt = doc.get("gpu_tests")
if gt and "gpu_tests" in by_name:
    skipped = ", ".join(f"{s['test']}" for s in gt["skipped"]) or "none"
    print(f"GPU tests: {sum(v['status'] == 'Passed' for v in gt['tests'].values())}/{len(gt['tests'])} passed"
          f"{'; missing ' + ' '.join(gt['missing']) if gt['missing'] else ''}; skipped: {skipped}")
cb = doc.get("codec_bench")
if cb:
    print(f"codec bench, {cb['largest_shape']} bf16 (GB/s = bytes read + written; d2d copy "
          f"{(cb['d2d_copy'].get(cb['largest_shape']) or {}).get('gbps', '?')} GB/s):")
    print(f"  {'codec':<16} {'quantize':>9} {'dequant':>9} {'#wrong':>7} {'max relL2':>10}")
    for c, v in cb["per_codec_at_largest_shape"].items():
        print(f"  {c:<16} {v.get('quantize_gbps', 0):>9.0f} {v.get('dequantize_gbps', 0):>9.0f} "
              f"{v['wrong_bytes']:>7} {v['max_rel_l2']:>10.5f}")
tr = doc.get("training")
if tr and tr.get("job"):
    m = tr["job"]["model"]
    print(f"training {tr['job']['name']} ({m['layers']} layers, d_model {m['d_model']}, seq {m['seq_len']}, "
          f"{tr['job']['micro_batch']}x{tr['job']['micro_batches']} micro-batches), bf16, int8 links, {tr['iters']} steps:")
    print(f"  {'run':<16} {'tokens/s':>10} {'s/step':>8} {'loss first -> last':>20}")
    for r, v in tr["runs"].items():
        if v and v.get("steps"):
            print(f"  {r:<16} {v['tokens_per_s_median']:>10.0f} {v['step_s_median']:>8.3f} "
                  f"{v['loss_first']:>9.3f} -> {v['loss_last']:.3f}")
        else:
            print(f"  {r:<16} {'(no result)':>10}")
print(f"result: {'ok' if doc['ok'] else 'FAILED: ' + ', '.join(failed)} ({doc['elapsed_s']} s); wrote {out_json}")
sys.exit(0 if doc["ok"] else 1)
PY

have_python=""
report() {  # report partial|final
  if [[ -n "$have_python" ]]; then
    "$have_python" "$WORK/report.py" "$WORK" "$JSON" "$1"
  else  # no python3 at all: the steps alone, without figures
    {
      printf '{"tool": "scripts/gpu-check.sh", "partial": %s, "gpu": %s, "note": "python3 missing: steps only",\n "steps": [' \
        "$([[ $1 == final ]] && echo false || echo true)" "${GPU:-false}"
      awk -F'\t' 'BEGIN{n=0} {printf "%s\n  {\"name\": \"%s\", \"required\": %s, \"status\": \"%s\", \"exit_status\": %s, \"seconds\": %s}", (n++ ? "," : ""), $1, ($2 == 1 ? "true" : "false"), $3, $4, $5}' "$WORK/steps.tsv"
      printf '\n ]}\n'
    } >"$JSON"
    [[ $1 == final ]] || return 0
    cat "$WORK/steps.tsv"
    awk -F'\t' '$2 == 1 && $3 != "ok" {bad=1} END{exit bad}' "$WORK/steps.tsv"
  fi
}

# run_step NAME REQUIRED(1|0) SECONDS CMD...: runs CMD under timeout, log in $WORK/logs, records it.
FAILED_REQUIRED=0
run_step() {
  local name=$1 required=$2 t=$3 log status rc t0 secs
  shift 3
  NSTEP=$((NSTEP + 1))
  log=$(printf '%s/logs/%02d-%s.log' "$WORK" "$NSTEP" "$name")
  if ((t <= 0)); then
    say "$name: skipped, the time budget ($BUDGET s) is spent"
    printf '%s\t%s\tskipped\t0\t0\t%s\n' "$name" "$required" "" >>"$WORK/steps.tsv"
    ((required)) && FAILED_REQUIRED=1
    report partial || true
    return 1
  fi
  printf 'gpu-check: %-20s ' "$name"
  t0=$(date +%s.%N)
  { echo "\$ $*"; echo; } >"$log"
  if [[ $1 == */* && ! -x $1 ]]; then
    echo "not built: $1" >>"$log"; rc=127
  elif timeout -k 10 "$t" "$@" >>"$log" 2>&1; then rc=0; else rc=$?; fi
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}')
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; echo "(stopped after $t s)" >>"$log" ;;
    *) status=failed ;;
  esac
  echo "$status ($secs s)"
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$required" "$status" "$rc" "$secs" "$log" >>"$WORK/steps.tsv"
  { echo "===== $name: $status, exit $rc, $secs s"; tail -c 2000000 "$log"; echo; } >>"$FULL_LOG"
  if [[ $status != ok ]]; then
    ((required)) && FAILED_REQUIRED=1
    tail -n 25 "$log" | sed 's/^/    | /' >&2
  fi
  report partial || true
  [[ $status == ok ]]
}

setvar started "$(date +%Y-%m-%dT%H:%M:%S%z)"
setvar start_epoch "$(date +%s)"
setvar host_name "$(hostname 2>/dev/null || echo unknown)"
setvar host_cpus "$(nproc)"
setvar host_cpu "$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//')"
setvar host_memory_gib "$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo 2>/dev/null)"
setvar host_os "$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release 2>/dev/null | tr -d '"') / $(uname -sr)"
setvar host_git_commit "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
setvar host_git_changed_files "$(git status --porcelain 2>/dev/null | wc -l)"
setvar build_dir "$BUILD"
setvar build_work_dir "$WORK"
setvar gpu_tests "${GPU_TESTS[*]}"

# ---- nvcc (CMake finds it in /usr/local/cuda/bin even when it is not on PATH) ----------------
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi
NVCC=$(command -v nvcc || true)
setvar tool_nvcc "$( [[ -n $NVCC ]] && "$NVCC" --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p' | head -1)"
setvar tool_nvcc_path "$NVCC"
setvar tool_cmake "$(cmake --version 2>/dev/null | sed -n 's/cmake version //p')"
setvar tool_ninja "$(ninja --version 2>/dev/null || true)"
setvar tool_cxx "$(c++ --version 2>/dev/null | head -1)"

# ---- Python and PyTorch: the first python that has a CUDA PyTorch, else one with any PyTorch ----
cat >"$WORK/probe.py" <<'PY'
import json, os, shlex, sys
out = {"python": sys.executable}
try:
    import torch
    out.update(version=torch.__version__, cuda=torch.version.cuda, cmake_prefix_path=torch.utils.cmake_prefix_path,
               cxx11_abi=bool(getattr(torch._C, "_GLIBCXX_USE_CXX11_ABI", True)))
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
        if out["cuda_available"]:
            p = torch.cuda.get_device_properties(0)
            out.update(device_count=torch.cuda.device_count(), device_name=p.name,
                       capability="%d.%d" % (p.major, p.minor), multiprocessors=p.multi_processor_count,
                       memory_gib=round(p.total_memory / 2**30, 1))
    except Exception as e:  # a broken driver must not stop the probe
        out["cuda_error"] = f"{type(e).__name__}: {e}"
except Exception as e:
    out["error"] = f"{type(e).__name__}: {e}"
# NCCL from PyTorch's wheel (nvidia-nccl-cu*), for machines whose CUDA toolkit has no nccl.h
try:
    import nvidia.nccl
    for d in list(nvidia.nccl.__path__):
        inc, lib = os.path.join(d, "include"), os.path.join(d, "lib")
        libs = sorted(f for f in os.listdir(lib) if f.startswith("libnccl.so")) if os.path.isdir(lib) else []
        if os.path.exists(os.path.join(inc, "nccl.h")) and libs:
            out["nccl_pip_include"], out["nccl_pip_library"] = inc, os.path.join(lib, libs[0])
except Exception:
    pass
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=1)
kind = "none" if "version" not in out else ("cuda" if out.get("cuda") else "cpu")
for k, v in {"TORCH_KIND": kind, "TORCH_VERSION": out.get("version", ""),
             "TORCH_CMAKE": out.get("cmake_prefix_path", ""), "TORCH_GPU": "1" if out.get("cuda_available") else "",
             "TORCH_CAP": out.get("capability", ""), "TORCH_DEVICE": out.get("device_name", ""),
             "TORCH_ERR": out.get("error", out.get("cuda_error", "")),
             "NCCL_PIP_INC": out.get("nccl_pip_include", ""), "NCCL_PIP_LIB": out.get("nccl_pip_library", "")}.items():
    print(f"{k}={shlex.quote(str(v))}")
PY
TORCH_KIND=none TORCH_VERSION="" TORCH_CMAKE="" TORCH_GPU="" TORCH_CAP="" TORCH_DEVICE="" TORCH_ERR=""
NCCL_PIP_INC="" NCCL_PIP_LIB=""
candidates=()
[[ -n "${GEOPIPE_PYTHON:-}" ]] && candidates+=("$GEOPIPE_PYTHON")
command -v python3 >/dev/null && candidates+=("$(command -v python3)")
[[ -x /usr/bin/python3 ]] && candidates+=(/usr/bin/python3)
chosen_kind=none i=0
for py in "${candidates[@]}"; do
  i=$((i + 1))
  [[ -z "$have_python" ]] && have_python=$py
  if vars=$(timeout -k 5 90 "$py" "$WORK/probe.py" "$WORK/probe-$i.json" 2>>"$WORK/logs/probe.log"); then
    kind=$(sed -n 's/^TORCH_KIND=//p' <<<"$vars")
    if [[ $chosen_kind == none && $kind != none ]] || [[ $chosen_kind == cpu && $kind == cuda ]] || [[ ! -e $WORK/probe.json ]]; then
      eval "$vars"
      chosen_kind=$kind
      cp "$WORK/probe-$i.json" "$WORK/probe.json"
    fi
    [[ $chosen_kind == cuda ]] && break
  fi
done
[[ -n "$have_python" ]] || say "no python3: the JSON will hold the steps only"

# ---- a GPU? nvidia-smi and PyTorch both asked -------------------------------------------------
GPU=false
smi_list="" why=()
if command -v nvidia-smi >/dev/null; then
  smi_list=$(timeout -k 5 30 nvidia-smi -L 2>&1 || true)
  if grep -q '^GPU [0-9]' <<<"$smi_list"; then
    GPU=true
  else
    why+=("nvidia-smi -L: $(head -1 <<<"$smi_list")")
  fi
else
  why+=("nvidia-smi: not found")
fi
if [[ -n $TORCH_GPU ]]; then
  GPU=true
elif [[ $TORCH_KIND == none ]]; then
  why+=("PyTorch: not installed")
else
  why+=("PyTorch $TORCH_VERSION: torch.cuda.is_available() is false${TORCH_ERR:+ ($TORCH_ERR)}")
fi
setvar gpu "$GPU"
if [[ $GPU == true ]]; then
  setvar gpu_detection "nvidia-smi: $(grep -c '^GPU [0-9]' <<<"$smi_list" || true) GPU(s); torch.cuda.is_available(): ${TORCH_GPU:+true}${TORCH_GPU:-false}"
else
  setvar gpu_detection "$(printf '%s; ' "${why[@]}" | sed 's/; $//')"
fi

cap_str=""
if [[ $GPU == true ]]; then
  if command -v nvidia-smi >/dev/null; then
    q=$(timeout -k 5 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader 2>/dev/null | head -1 || true)
    d_name="" d_driver="" d_mem="" d_cap=""
    IFS=',' read -r d_name d_driver d_mem d_cap <<<"$q" || true
    setvar device_name "${d_name# }"
    setvar device_driver "$(echo "${d_driver:-}" | tr -d ' ')"
    setvar device_memory "${d_mem# }"
    cap_str=$(echo "${d_cap:-}" | tr -d ' ')
    setvar device_cuda "$(timeout -k 5 30 nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1 || true)"
    setvar device_count "$(grep -c '^GPU [0-9]' <<<"$smi_list" || true)"
  else
    setvar device_name "$TORCH_DEVICE"
  fi
  [[ $cap_str =~ ^[0-9]+\.[0-9]+$ ]] || cap_str=$TORCH_CAP
  setvar device_compute_cap "$cap_str"
fi

# ---- Open MPI, spdlog, fmt, nlohmann-json, CLI11, GoogleTest: system, or the .deb recipe ------
missing_deps() {
  local m=() h d found cpath=${CPATH:-}
  command -v mpicxx >/dev/null || m+=("Open MPI (mpicxx)")
  command -v mpirun >/dev/null || m+=("Open MPI (mpirun)")
  for h in spdlog/spdlog.h fmt/core.h nlohmann/json.hpp CLI/CLI.hpp gtest/gtest.h; do
    found=""
    for d in ${cpath//:/ } /usr/include /usr/local/include; do [[ -e $d/$h ]] && found=1 && break; done
    [[ -n $found ]] || m+=("$h")
  done
  echo "${m[*]}"
}
missing=$(missing_deps)
deps_source=system
if [[ -n $missing ]]; then
  if [[ -f .gpu/use-debs.sh ]] && compgen -G ".debs/*.deb" >/dev/null && command -v dpkg >/dev/null; then
    say "missing here: $missing; unpacking .debs/ with .gpu/use-debs.sh"
    # shellcheck disable=SC1091
    if . .gpu/use-debs.sh .debs >"$WORK/logs/use-debs.log" 2>&1; then
      deps_source="debs (.gpu/use-debs.sh .debs)"
    else
      deps_source="debs (.gpu/use-debs.sh .debs failed: $(tail -1 "$WORK/logs/use-debs.log"))"
    fi
    missing=$(missing_deps)
  fi
  if [[ -n $missing ]]; then
    say "missing: $missing. Install them (scripts/setup.sh prints the apt-get line) or, on a machine" \
        "without internet, bring .debs/ and .gpu/ as ../shared/gpu/README.md says; configuring anyway."
    deps_source="$deps_source; missing: $missing"
  fi
fi
setvar deps_source "$deps_source"
setvar deps_mpirun "$(command -v mpirun || true)"
setvar deps_mpirun_version "$(mpirun --version 2>/dev/null | head -1 || true)"
# Open MPI as root, and on a single host without ssh/rsh (its rsh launcher refuses to start then).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
if ! command -v ssh >/dev/null && ! command -v rsh >/dev/null && [[ -z "${OMPI_MCA_plm:-}${OMPI_MCA_plm_rsh_agent:-}" ]]; then
  export OMPI_MCA_plm='^rsh'
  setvar deps_ompi_plm "^rsh (no ssh/rsh here)"
fi

# ---- the CUDA configuration ------------------------------------------------------------------
cmake_args=(-S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGEOPIPE_CUDA=ON)
keep_going=()   # build: one target failing does not stop the others
if command -v ninja >/dev/null; then cmake_args+=(-G Ninja); keep_going=(-- -k 0); fi
if [[ -n "${Torch_DIR:-}" ]]; then
  torch_dir=$Torch_DIR   # set by the caller: used as it is
elif [[ $TORCH_KIND == cuda && -n $TORCH_CMAKE ]]; then
  torch_dir=$TORCH_CMAKE/Torch
else                     # the system's LibTorch (Debian's libtorch-dev), else CMake's own search
  torch_dir=$(dirname "$(compgen -G '/usr/lib/*/cmake/Torch/TorchConfig.cmake' | head -1)" 2>/dev/null || true)
  [[ $torch_dir == . ]] && torch_dir=""
fi
[[ -n $torch_dir ]] && torch_dir=$(realpath -m -- "$torch_dir") && cmake_args+=("-DTorch_DIR=$torch_dir")
setvar build_torch_dir "${torch_dir:-(CMake search)}"
# A build folder configured against another LibTorch keeps that one's cached paths: start afresh.
if [[ -f $BUILD/CMakeCache.txt ]]; then
  cached=$(sed -n 's/^Torch_DIR:PATH=//p' "$BUILD/CMakeCache.txt")
  if [[ -n $cached ]] && { [[ -n $torch_dir && $cached != "$torch_dir" ]] || [[ -z $torch_dir && ! -d $cached ]]; }; then
    say "$BUILD was configured against $cached: removing its CMake cache"
    rm -rf "$BUILD/CMakeCache.txt" "$BUILD/CMakeFiles"
  fi
fi
if [[ $cap_str =~ ^([0-9]+)\.([0-9]+)$ ]]; then
  cmake_args+=("-DCMAKE_CUDA_ARCHITECTURES=${BASH_REMATCH[1]}${BASH_REMATCH[2]}")
  export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$cap_str}
fi
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-8.0;9.0}   # LibTorch's CMake need not look for a GPU
# NCCL: CMake looks next to the CUDA toolkit and in NCCL_HOME; else PyTorch's own wheel has one.
if [[ -n $NVCC && -z "${NCCL_HOME:-}" && -n $NCCL_PIP_INC ]]; then
  cuda_root=$(dirname "$(dirname "$(readlink -f "$NVCC")")")
  if [[ ! -e $cuda_root/include/nccl.h && ! -e /usr/include/nccl.h && ! -e /usr/local/include/nccl.h ]]; then
    cmake_args+=("-DNCCL_INCLUDE_DIR=$NCCL_PIP_INC" "-DNCCL_LIBRARY=$NCCL_PIP_LIB")
    setvar build_nccl "PyTorch's wheel: $NCCL_PIP_LIB"
  fi
fi
# shellcheck disable=SC2206
extra=(${GEOPIPE_CMAKE_ARGS:-})
cmake_args+=("${extra[@]}")
setvar build_cmake_args "${cmake_args[*]}"

finish() {
  if report final; then rc=0; else rc=1; fi
  # without python the verdict comes from the steps alone
  ((FAILED_REQUIRED)) && rc=1
  exit "$rc"
}

if [[ $GPU != true ]]; then
  say "no NVIDIA GPU here ($(printf '%s; ' "${why[@]}" | sed 's/; $//')); checking that the CUDA build configures"
  if [[ -z $NVCC ]]; then
    say "no nvcc either (not on PATH, not in /usr/local/cuda/bin): configure skipped"
    setvar configure skipped
    report final || true
    exit 0
  fi
  if [[ $TORCH_KIND == cuda ]]; then say "LibTorch: PyTorch $TORCH_VERSION ($torch_dir)"
  else say "LibTorch: ${torch_dir:-the system one (Debian libtorch-dev)}; PyTorch's is ${TORCH_VERSION:-absent}${TORCH_VERSION:+ without CUDA}"; fi
  run_step configure 1 300 cmake "${cmake_args[@]}" || true
  if grep -q '^-- geopipe ' "$WORK/logs/01-configure.log" 2>/dev/null; then
    setvar build_summary "$(grep -m1 '^-- geopipe ' "$WORK/logs/01-configure.log" | sed 's/^-- //')"
    say "$(grep -m1 '^-- geopipe ' "$WORK/logs/01-configure.log" | sed 's/^-- //')"
  fi
  # The targets and ctest names the GPU run relies on exist in this configuration.
  if [[ -f $BUILD/CMakeCache.txt ]] && grep -q '^-- geopipe ' "$WORK/logs/01-configure.log"; then
    # shellcheck disable=SC2016  # the inner script's own variables
    run_step targets 1 60 bash -c 'set -e; b=$1; shift; help=$(cmake --build "$b" --target help);
      for t in "$@"; do grep -qE "(^|[[:space:]])$t(:|\$| )" <<<"$help" || { echo "no build target $t"; exit 1; }; done
      echo "build targets: $*"; ctest --test-dir "$b" -N -R "$GPU_TEST_RE"' _ "$BUILD" "${TARGETS[@]}" || true
  fi
  finish
fi

# ---- with a GPU: configure, build, test, measure ---------------------------------------------
say "GPU: $(sed -n 's/^device_name\t//p' "$WORK/vars.tsv") (compute $cap_str); LibTorch: ${torch_dir:-system} (PyTorch ${TORCH_VERSION:-absent}, ${TORCH_KIND})"
[[ $TORCH_KIND == cuda ]] || say "warning: PyTorch's LibTorch has no CUDA here: the training runs on --device cuda will fail"
[[ -n $NVCC ]] || say "no nvcc: a CUDA build cannot be configured"
if ! run_step configure 1 "$(cap 180)" cmake "${cmake_args[@]}"; then
  say "the CUDA build does not configure: nothing to build or run"
  finish
fi
grep -m1 '^-- geopipe ' "$WORK/logs/01-configure.log" | sed 's/^-- /gpu-check: /' || true
setvar build_summary "$(grep -m1 '^-- geopipe ' "$WORK/logs/01-configure.log" | sed 's/^-- //' || true)"
# Keep 120 s of the budget for the runs. A target that fails to build fails only the steps that need it.
run_step build 1 "$(($(cap 420) - 120))" cmake --build "$BUILD" -j "$(nproc)" --target "${TARGETS[@]}" "${keep_going[@]}" || true

run_step version 0 "$(cap 30)" "$BIN/geopipe" version || true
run_step gpu_tests 1 "$(cap 150)" ctest --test-dir "$BUILD" -R "$GPU_TEST_RE" --no-tests=error -V --timeout 120 || true
run_step codec_bench 1 "$(cap 120)" "$BIN/geopipe-codec-bench" --device cuda -n 100 --json "$WORK/codec-bench.json" || true

# A GPT big enough to give the GPU some work per step, small enough to start in seconds.
cat >"$WORK/job.json" <<'JSON'
{
  "name": "gpt-gpu-check",
  "note": "scripts/gpu-check.sh: byte-level GPT, 25M parameters, 32768 tokens per step",
  "model": {"layers": 8, "d_model": 512, "heads": 8, "seq_len": 256, "vocab": 256, "dtype": "bf16"},
  "micro_batch": 16,
  "micro_batches": 8,
  "iterations": 20,
  "stages": [1, 2]
}
JSON
setvar train_iters "$ITERS"
# shellcheck disable=SC2016  # the inner script's own variables
run_step plan 1 "$(cap 30)" bash -c 'set -e; for s in 1 2; do "$1" plan --topology "$2" --job "$3/job.json" --stages $s -o "$3/plan-$s.json"; done' \
  _ "$BIN/geopipe" "$TOPO" "$WORK" || true
train_args=(--data "$DATA" --device cuda --dtype bf16 --codec int8 --iters "$ITERS" --seed 1 --eval-every "$ITERS" --eval-batches 4)
# 2 ranks, one per emulated region (software WAN shaper: the plan's link's bandwidth and latency), one GPU
t=$(cap 120)
run_step train_two_stage_wan 1 "$t" "$BIN/geopipe" launch --plan "$WORK/plan-2.json" --topology "$TOPO" --emulate software \
  --timeout "$((t > 20 ? t - 10 : t))" -- "$BIN/geopipe-train" --plan "$WORK/plan-2.json" --topology "$TOPO" \
  "${train_args[@]}" --json-log "$WORK/train-two_stage_wan.jsonl" || true
# the one-stage reference: the whole model in one process
run_step train_one_stage 1 "$(cap 90)" "$BIN/geopipe-train" --plan "$WORK/plan-1.json" --topology "$TOPO" \
  "${train_args[@]}" --json-log "$WORK/train-one_stage.jsonl" || true
# the same 2 stages without WAN emulation: what the pipeline costs on one GPU
t=$(cap 90)
run_step train_two_stage_local 0 "$t" "$BIN/geopipe" launch --plan "$WORK/plan-2.json" --topology "$TOPO" --emulate none \
  --timeout "$((t > 20 ? t - 10 : t))" -- "$BIN/geopipe-train" --plan "$WORK/plan-2.json" --topology "$TOPO" \
  "${train_args[@]}" --json-log "$WORK/train-two_stage_local.jsonl" || true
finish
