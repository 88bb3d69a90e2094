#!/usr/bin/env python3
"""queue_small_mpmc for CPython's multiprocessing: the Python side of mp's scenario of that name.

    python3 benches/python/queue_small_mpmc.py           # 4 x 50,000 ints, 5 timed repetitions
    python3 benches/python/queue_small_mpmc.py --quick   # 4 x 10,000 ints, 3 repetitions

Specified like the scenarios of the shared benchmark (../shared/bench/python/README.md, 5b):

- Set-up, per repetition: fresh ``q = Queue()`` and ``results = Queue()``, a ``Barrier(9)``, 4
  producer and 4 consumer children started outside the timed region (start method fork).
- Producer i: ``barrier.wait()``, then puts the ints ``i*50_000 .. (i+1)*50_000 - 1``, then one
  ``None``.
- Consumer: ``barrier.wait()``, then ``get()`` until its first ``None``; puts ``(count, sum, xor)``
  of what it got on ``results``.
- Parent, timed: from its return from ``barrier.wait()`` until all 4 results are in (FIFO: each
  producer's ``None`` follows its items, so when the 4th ``None`` is taken every item has been).
- Sample: ``200_000 / elapsed``; one untimed warm-up, then the median of the timed samples.
  Verify: counts add up to 200,000, sums to 0+...+199,999, xors to the xor of 0..199,999.
- Line: ``{"scenario": "queue_small_mpmc", "metric": "throughput", "value": ..., "unit": "msgs/s"}``

The shared benchmark (``bench.py --only queue_small_mpmc``) runs the same scenario; this file
keeps the mirror next to mp's bench so that it can be run and read on its own.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time

TIMEOUT = 300.0  # seconds; bound on every blocking wait


def put_range(barrier, q, start, stop):
    barrier.wait(TIMEOUT)
    for i in range(start, stop):
        q.put(i)
    q.put(None)


def take_until_none(barrier, q, results):
    barrier.wait(TIMEOUT)
    count = total = xor = 0
    while True:
        item = q.get(timeout=TIMEOUT)
        if item is None:
            break
        count += 1
        total += item
        xor ^= item
    results.put((count, total, xor))


def child(barrier, body, *args):
    """Run ``body(barrier, *args)``; on failure break the barrier so the parent does not hang."""
    try:
        body(barrier, *args)
    except BaseException:
        barrier.abort()
        raise


def queue_small_mpmc(ctx, n, reps, k=4):
    per = n // k
    expect_xor = 0
    for i in range(k * per):
        expect_xor ^= i
    rates = []
    for rep in range(reps + 1):  # the first repetition is the untimed warm-up
        q = ctx.Queue()
        results = ctx.Queue()
        barrier = ctx.Barrier(2 * k + 1)
        procs = [ctx.Process(target=child, args=(barrier, put_range, q, i * per, (i + 1) * per),
                             daemon=True) for i in range(k)]
        procs += [ctx.Process(target=child, args=(barrier, take_until_none, q, results), daemon=True)
                  for _ in range(k)]
        for p in procs:
            p.start()
        barrier.wait(TIMEOUT)
        t0 = time.perf_counter()
        got = [results.get(timeout=TIMEOUT) for _ in range(k)]
        dt = time.perf_counter() - t0
        for p in procs:
            p.join(TIMEOUT)
            if p.exitcode != 0:
                raise SystemExit(f"queue_small_mpmc: child {p.name} ended with {p.exitcode}")
        xor = 0
        for _, _, x in got:
            xor ^= x
        if (sum(c for c, _, _ in got) != k * per
                or sum(s for _, s, _ in got) != k * per * (k * per - 1) // 2 or xor != expect_xor):
            raise SystemExit(f"queue_small_mpmc: consumers saw {got}, expected {k * per} items")
        if rep > 0:
            rates.append(k * per / dt)
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4 x 10,000 ints, 3 repetitions")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 5; quick 3)")
    args = parser.parse_args()
    n = 40_000 if args.quick else 200_000
    reps = args.reps or (3 if args.quick else 5)
    value = queue_small_mpmc(mp.get_context("fork"), n, reps)
    line = {"scenario": "queue_small_mpmc", "metric": "throughput",
            "value": float(f"{value:.6g}"), "unit": "msgs/s"}
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
