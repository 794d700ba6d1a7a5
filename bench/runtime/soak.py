#!/usr/bin/env python3
"""Soak: train a GPT for thousands of steps across emulated regions and watch every rank's memory,
threads and open files.

Plans the job with BACE-Pipe (a compute profile measured here first, unless --plan is given),
starts it with `geopipe launch --emulate software` (one rank per region of the topology), and every
--sample-s seconds reads each rank's /proc/PID/status (VmRSS, Threads) and counts /proc/PID/fd,
together with the step the job has reached (the last line of rank 0's JSON log). Checkpoints are
written every --checkpoint-every steps. At the end it prints, per rank: RSS at the end of warm-up
and at the end, the least-squares slope of RSS against step after warm-up (KiB per 1,000 steps),
threads and open fds (min/max after warm-up, and over the whole run).

With --check the run also fails (exit 1) when a rank's RSS slope exceeds --max-slope-kib, or its
thread or fd count after warm-up varies by more than --max-thread-delta / --max-fd-delta: the
ctest `soak_short_test` runs it that way. --json FILE writes the summary and every sample.

  bench/runtime/soak.py --bin build/bin --steps 2000 --json soak.json
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="folder with geopipe and geopipe-train")
    p.add_argument("--topology", default=os.path.join(ROOT, "examples/topologies/local4.json"))
    p.add_argument("--job", default=os.path.join(ROOT, "examples/jobs/gpt-tiny-soak.json"))
    p.add_argument("--data", default=os.path.join(ROOT, "examples/gpt/data/kjv-pentateuch.txt"))
    p.add_argument("--plan", help="use this plan instead of profiling and planning with BACE-Pipe")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--warmup-steps", type=int, default=-1,
                   help="steps excluded from the slope (default: 15%% of --steps)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--sample-s", type=float, default=3.0, help="seconds between samples")
    p.add_argument("--timeout", type=float, default=7200, help="seconds before the job is stopped")
    p.add_argument("--work-dir", default="", help="plan, logs and checkpoints (default: a temp folder)")
    p.add_argument("--json", default="", help="write the summary and all samples here")
    p.add_argument("--check", action="store_true", help="exit 1 when a threshold below is broken")
    p.add_argument("--max-slope-kib", type=float, default=0.0,
                   help="with --check: largest RSS slope allowed, KiB per 1,000 steps")
    p.add_argument("--max-thread-delta", type=int, default=0,
                   help="with --check: largest (max - min) of a rank's threads after warm-up")
    p.add_argument("--max-fd-delta", type=int, default=0,
                   help="with --check: largest (max - min) of a rank's open fds after warm-up")
    p.add_argument("--train-arg", action="append", default=[],
                   help="extra geopipe-train argument (repeat)")
    a = p.parse_args()
    if a.steps < 10:
        p.error("--steps must be at least 10")
    if a.warmup_steps < 0:
        a.warmup_steps = max(1, int(a.steps * 0.15))
    if a.warmup_steps >= a.steps:
        p.error("--warmup-steps must be below --steps")
    if a.sample_s <= 0:
        p.error("--sample-s must be positive")
    for name in ("geopipe", "geopipe-train"):
        if not os.access(os.path.join(a.bin, name), os.X_OK):
            p.error(f"--bin: {os.path.join(a.bin, name)} is not an executable")
    return a


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"soak: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def make_plan(a, work):
    if a.plan:
        return a.plan
    geopipe, train = os.path.join(a.bin, "geopipe"), os.path.join(a.bin, "geopipe-train")
    one = os.path.join(work, "one-stage.json")
    profile = os.path.join(work, "profile.json")
    plan = os.path.join(work, "plan.json")
    run([geopipe, "plan", "--topology", a.topology, "--job", a.job, "--stages", "1", "-o", one])
    run([train, "--plan", one, "--data", a.data, "--profile", profile, "--threads", "1"])
    run([geopipe, "plan", "--topology", a.topology, "--job", a.job, "--profile", profile, "-o", plan])
    return plan


def children_of(root_pid):
    """Every descendant of root_pid, as {pid: comm}."""
    parent = {}
    comm = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses
        close = s.rfind(")")
        comm[int(d)] = s[s.find("(") + 1:close]
        parent[int(d)] = int(s[close + 2:].split()[1])
    out = {}
    for pid in parent:
        p = pid
        while p > 1 and p in parent:
            p = parent[p]
            if p == root_pid:
                out[pid] = comm[pid]
                break
    return out


def rank_of(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            for kv in f.read().split(b"\0"):
                if kv.startswith(b"OMPI_COMM_WORLD_RANK="):
                    return int(kv.split(b"=", 1)[1])
    except (OSError, ValueError):
        pass
    return None


def sample_pid(pid):
    """(rss_kib, threads, fds) or None when the process is gone."""
    try:
        rss = threads = None
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        return rss, threads, fds
    except (OSError, ValueError):
        return None


def last_step(log_path, state):
    """The step of the last complete line of the JSON log (read incrementally)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(state["offset"])
            data = f.read()
    except OSError:
        return state["step"]
    state["offset"] += len(data)
    lines = (state["rest"] + data).split(b"\n")
    state["rest"] = lines[-1]  # an incomplete last line waits for the next read
    for line in lines[:-1]:
        if line.strip():
            rec = json.loads(line)
            state["step"] = int(rec["step"])
            state["loss"] = float(rec["loss"])
    return state["step"]


def slope_per_1000(xs, ys):
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return 1000.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def analyse(samples, warmup_steps, last_step, limits=None):
    """Per-rank rows from the samples ({step, rank, rss_kib, threads, fds}), and the limits broken
    (limits: {"slope_kib": KiB per 1,000 steps, "threads": max - min, "fds": max - min}, or None).
    Steady state is warmup_steps <= step < last_step: the end (final checkpoint, summary, MPI
    teardown, threads and files closing) is not."""
    rows, failures = [], []
    for r in sorted({s["rank"] for s in samples}):
        mine = [s for s in samples if s["rank"] == r]
        warm = [s for s in mine if warmup_steps <= s["step"] < last_step]
        if len(warm) < 3:
            failures.append(f"rank {r}: only {len(warm)} samples after warm-up (raise --steps or lower --sample-s)")
            continue
        slope = slope_per_1000([s["step"] for s in warm], [s["rss_kib"] for s in warm])
        row = {"rank": r, "samples": len(mine), "samples_after_warmup": len(warm),
               "rss_warm_kib": warm[0]["rss_kib"], "rss_end_kib": warm[-1]["rss_kib"],
               "rss_max_kib": max(s["rss_kib"] for s in warm),
               "slope_kib_per_1000_steps": round(slope, 1),
               "threads_min": min(s["threads"] for s in warm), "threads_max": max(s["threads"] for s in warm),
               "threads_min_all": min(s["threads"] for s in mine), "threads_max_all": max(s["threads"] for s in mine),
               "fds_min": min(s["fds"] for s in warm), "fds_max": max(s["fds"] for s in warm),
               "fds_min_all": min(s["fds"] for s in mine), "fds_max_all": max(s["fds"] for s in mine)}
        rows.append(row)
        if limits is not None:
            if slope > limits["slope_kib"]:
                failures.append(f"rank {r}: RSS slope {slope:.0f} KiB per 1,000 steps > {limits['slope_kib']:.0f}")
            if row["threads_max"] - row["threads_min"] > limits["threads"]:
                failures.append(f"rank {r}: threads {row['threads_min']}..{row['threads_max']} after warm-up")
            if row["fds_max"] - row["fds_min"] > limits["fds"]:
                failures.append(f"rank {r}: open fds {row['fds_min']}..{row['fds_max']} after warm-up")
    if not rows and not failures:
        failures.append("no rank was sampled")
    return rows, failures


def main():
    a = parse_args()
    work = a.work_dir or tempfile.mkdtemp(prefix="geopipe-soak-")
    os.makedirs(work, exist_ok=True)
    plan = make_plan(a, work)
    log_path = os.path.join(work, "train.jsonl")
    ckpt = os.path.join(work, "checkpoint")
    # A fresh run: no log or checkpoint of an earlier one in --work-dir.
    if os.path.exists(log_path):
        os.remove(log_path)
    shutil.rmtree(ckpt, ignore_errors=True)
    cmd = [os.path.join(a.bin, "geopipe"), "launch", "--plan", plan, "--topology", a.topology,
           "--emulate", "software", "--timeout", str(a.timeout), "--",
           os.path.join(a.bin, "geopipe-train"), "--plan", plan, "--topology", a.topology,
           "--data", a.data, "--iters", str(a.steps), "--json-log", log_path,
           "--checkpoint-dir", ckpt, "--checkpoint-every", str(a.checkpoint_every),
           "--eval-every", str(a.eval_every), "--no-progress"] + a.train_arg
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = open(os.path.join(work, "launch.log"), "w")
    print(f"soak: {a.steps} steps, plan {plan}, work folder {work}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(signum, frame):
        proc.send_signal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    with open(plan) as f:
        world = sum(len(stage["ranks"]) for stage in json.load(f)["stages"])
    ranks = {}       # rank -> pid
    samples = []     # {t, step, rank, rss_kib, threads, fds}
    log_state = {"offset": 0, "rest": b"", "step": 0, "loss": float("nan")}
    next_report = t0 + 60
    while proc.poll() is None:
        time.sleep(a.sample_s)
        if proc.poll() is not None:
            break
        if len(ranks) < world or any(sample_pid(p) is None for p in ranks.values()):
            for pid, comm in children_of(proc.pid).items():
                if comm.startswith("geopipe-train"):
                    r = rank_of(pid)
                    if r is not None:
                        ranks[r] = pid
        step = last_step(log_path, log_state)
        t = time.monotonic() - t0
        for r, pid in sorted(ranks.items()):
            s = sample_pid(pid)
            if s is not None and s[0] is not None:
                samples.append({"t": round(t, 2), "step": step, "rank": r,
                                "rss_kib": s[0], "threads": s[1], "fds": s[2]})
        if time.monotonic() >= next_report:
            rss = " ".join(f"r{s['rank']}={s['rss_kib'] // 1024}M" for s in samples[-len(ranks):])
            print(f"soak: {t:7.0f} s  step {step:6d}  {rss}", flush=True)
            next_report += 60
    rc = proc.wait()
    out.close()
    last_step(log_path, log_state)
    wall = time.monotonic() - t0
    if rc != 0:
        with open(os.path.join(work, "launch.log")) as f:
            tail = f.read()[-4000:]
        sys.exit(f"soak: the job failed with status {rc} at step {log_state['step']}:\n{tail}")

    # The JSON log is written by rank 0 after each step: the slope is RSS against that step.
    summary = {"steps": log_state["step"], "wall_s": round(wall, 1), "warmup_steps": a.warmup_steps,
               "final_loss": log_state["loss"], "plan": plan, "job": a.job, "topology": a.topology,
               "checkpoint_every": a.checkpoint_every, "sample_s": a.sample_s, "ranks": []}
    limits = None
    if a.check:
        limits = {"slope_kib": a.max_slope_kib, "threads": a.max_thread_delta, "fds": a.max_fd_delta}
    summary["ranks"], failures = analyse(samples, a.warmup_steps, log_state["step"], limits)
    if len(summary["ranks"]) < world:
        failures.append(f"only {len(summary['ranks'])} of the plan's {world} ranks were sampled")

    print(f"\nsoak: {summary['steps']} steps in {wall:.0f} s ({wall / max(1, summary['steps']):.2f} s/step), "
          f"warm-up {a.warmup_steps} steps, {len(samples)} samples every {a.sample_s:g} s, "
          f"checkpoint every {a.checkpoint_every}, final loss {log_state['loss']:.3f}")
    hdr = (f"{'rank':>4} {'samples':>7} {'RSS warm MiB':>12} {'RSS end MiB':>11} {'RSS max MiB':>11} "
           f"{'slope KiB/1k steps':>18} {'threads':>9} {'fds':>9} {'threads all':>11} {'fds all':>9}")
    print(hdr)
    for row in summary["ranks"]:
        print(f"{row['rank']:>4} {row['samples_after_warmup']:>7} {row['rss_warm_kib'] / 1024:>12.1f} "
              f"{row['rss_end_kib'] / 1024:>11.1f} {row['rss_max_kib'] / 1024:>11.1f} "
              f"{row['slope_kib_per_1000_steps']:>18.1f} "
              f"{row['threads_min']:>4}-{row['threads_max']:<4} {row['fds_min']:>4}-{row['fds_max']:<4} "
              f"{row['threads_min_all']:>5}-{row['threads_max_all']:<5} {row['fds_min_all']:>4}-{row['fds_max_all']:<4}")
    if a.json:
        summary["failures"] = failures
        summary["samples"] = samples
        with open(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    for msg in failures:
        print(f"soak: FAIL {msg}", file=sys.stderr)
    if failures:
        print(f"soak: logs and checkpoints kept in {work}", file=sys.stderr)
    elif not a.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
