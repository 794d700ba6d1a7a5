#!/usr/bin/env python3
"""The soak's verdict (bench/runtime/soak.py: analyse) on synthetic samples shaped like
soak_short_test's: 200 steps, warm-up 60, a sample every ~3 steps, RSS noise of a few MiB. Each leak
soak_short_test is meant to catch must fail these limits, and a flat run with noise must pass."""
import importlib.util
import os
import random
import sys
import unittest

SOAK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "runtime", "soak.py")
spec = importlib.util.spec_from_file_location("soak", SOAK)
soak = importlib.util.module_from_spec(spec)
spec.loader.exec_module(soak)

# soak_short_test's limits (tests/launch/CMakeLists.txt).
LIMITS = {"slope_kib": 32768, "threads": 1, "fds": 2}
ACTIVATION_KIB = 8 * 64 * 64 * 4 / 1024  # micro_batch x seq_len x d_model fp32: 128 KiB


def run(rss_per_step_kib=0.0, thread_every=0, fd_every=0, noise_kib=2048, seed=1, last_step=200):
    rng = random.Random(seed)
    samples = []
    for rank in (0, 1):
        for i in range(0, 80):
            step = min(last_step, int(i * 2.6))
            threads = 4 + (step // thread_every if thread_every and step >= 60 else 0)
            fds = 18 + (step // fd_every if fd_every and step >= 60 else 0)
            rss = 180 * 1024 + rss_per_step_kib * step + rng.uniform(-noise_kib, noise_kib)
            if step == last_step:  # tear-down: threads and files closing, memory freed
                threads, fds, rss = 1, 3, rss / 2
            samples.append({"t": i, "step": step, "rank": rank, "rss_kib": int(rss), "threads": threads, "fds": fds})
    return soak.analyse(samples, 60, last_step, LIMITS)


class SoakVerdict(unittest.TestCase):
    def test_flat_run_with_allocator_noise_passes(self):
        for seed in range(20):
            rows, failures = run(seed=seed)
            self.assertEqual(failures, [], f"seed {seed}")
            self.assertEqual(len(rows), 2)
            self.assertLess(abs(rows[0]["slope_kib_per_1000_steps"]), LIMITS["slope_kib"] / 3)

    def test_leaking_one_activation_per_step_fails(self):
        # 128 KiB a step = 128,000 KiB per 1,000 steps: four times the 32,768 limit.
        rows, failures = run(rss_per_step_kib=ACTIVATION_KIB)
        self.assertTrue(any("RSS slope" in f for f in failures), failures)
        self.assertAlmostEqual(rows[0]["slope_kib_per_1000_steps"], ACTIVATION_KIB * 1000, delta=8000)

    def test_leaking_one_activation_every_three_steps_fails(self):
        _, failures = run(rss_per_step_kib=ACTIVATION_KIB / 3)
        self.assertTrue(any("RSS slope" in f for f in failures), failures)

    def test_a_thread_per_checkpoint_fails(self):
        _, failures = run(thread_every=40)
        self.assertTrue(any("threads" in f for f in failures), failures)

    def test_a_file_per_checkpoint_fails(self):
        _, failures = run(fd_every=40)
        self.assertTrue(any("open fds" in f for f in failures), failures)

    def test_tear_down_after_the_last_step_is_not_steady_state(self):
        rows, failures = run()
        self.assertEqual(failures, [])
        self.assertEqual(rows[0]["threads_min"], 4)
        self.assertEqual(rows[0]["threads_min_all"], 1)

    def test_too_few_samples_after_warm_up_fails(self):
        _, failures = soak.analyse([{"t": 0, "step": 70, "rank": 0, "rss_kib": 1, "threads": 1, "fds": 1}], 60, 200,
                                   LIMITS)
        self.assertTrue(any("samples after warm-up" in f for f in failures), failures)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"])
