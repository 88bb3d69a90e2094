#!/usr/bin/env python3
"""pool_timeouts for pebble's ProcessPool: the Python side of mp's scenario of that name.

    pip install pebble                                  # not in the standard library
    python3 benches/python/pool_timeouts.py             # 10,000 tasks, 5 timed repetitions
    python3 benches/python/pool_timeouts.py --quick     # 2,000 tasks, 3 repetitions

mp's ``benches/scenarios/pool_timeouts.rs`` mirrors it; ``compare.py`` joins the two:

    python3 ../shared/bench/compare.py --only pool_timeouts \\
        --python-cmd "python3 benches/python/pool_timeouts.py"

The shared bench.py (section 16) has the same scenario with only ``throughput`` and the two
``kill_past_limit_*`` lines; this file adds the others. Differences from bench.py: one pool
serves the warm-up and the timed repetitions, its workers started before the first timed region
(bench.py builds a pool per repetition and pebble starts its workers on the first ``schedule``,
inside the timed region), and a hanging task sleeps 60 s instead of an hour (it is killed after
20 ms either way).

- Task ``busy_or_hang(i)`` (bench.py's ``workers.busy_or_hang``): when ``i % 100 == 7`` it hangs
  (100 of 10,000), else it spins 10 us and returns ``i``. A hanging task first writes its
  deadline (its start + 20 ms, ``CLOCK_MONOTONIC``) to a shared ``RawArray`` that the pool's
  initializer hands to every worker, replacements included.
- Set-up, once: ``pebble.ProcessPool(max_workers=2)`` (start method fork) and one task run in it.
- Repetition, timed from before the first ``schedule`` until every future is resolved:
  ``pool.schedule(busy_or_hang, args=(i,), timeout=0.02)`` for ``i`` in ``0..10_000``; the
  futures of hanging tasks get a done callback that notes when their failure arrived (it runs on
  pebble's thread when it resolves the future); then ``.result()`` of each in order. Verify:
  9,900 results equal their ``i``, 100 ``concurrent.futures.TimeoutError``, nothing else.
- One untimed warm-up repetition, then 5 timed (quick: 3). Lines (scenario ``pool_timeouts``):
  ``throughput`` (tasks/s, median of ``10_000 / elapsed``), ``elapsed`` (s, median),
  ``ideal_bound`` (s, ``(10_000 * 10 us + 100 * 20 ms) / 2`` = 1.05), ``ratio_to_ideal`` (s/s,
  median elapsed / ideal bound), ``kill_late_p50`` and ``kill_late_p99`` (ms, from a hanging
  task's deadline to its failure's arrival, over the hanging tasks of all timed repetitions; p99
  is ``statistics.quantiles(n=100)[98]``).
- Then bench.py's single kills: on ``ProcessPool(max_workers=1)``, 21 hanging tasks one at a
  time, ``elapsed - 0.02 s`` in ms: ``kill_past_limit_p50`` (median) and
  ``kill_past_limit_max``.
"""

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time
from concurrent.futures import TimeoutError as FutureTimeout

LIMIT = 0.02  # s, every task's timeout
WORK = 1e-5  # s, a task's CPU time when it does not hang
HANG = 60.0  # s, far past the limit
WORKERS = 2
SINGLE_KILLS = 21

DEADLINES = None  # in a worker: the shared RawArray('d') of the hanging tasks' deadlines


def clock():
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def keep_deadlines(deadlines):
    global DEADLINES
    DEADLINES = deadlines


def busy_or_hang(i):
    if i % 100 == 7:
        if DEADLINES is not None:
            DEADLINES[i // 100] = clock() + LIMIT
        time.sleep(HANG)
    t = time.perf_counter()
    while time.perf_counter() - t < WORK:
        pass
    return i


def quantile_99(samples):
    return statistics.quantiles(samples, n=100)[98]


def one_round(pool, deadlines, n, hung):
    for k in range(len(hung)):
        deadlines[k] = 0.0
    arrivals = [0.0] * len(hung)

    def arrived(k):
        def note(_future):
            arrivals[k] = clock()
        return note

    t0 = time.perf_counter()
    futures = []
    for i in range(n):
        f = pool.schedule(busy_or_hang, args=(i,), timeout=LIMIT)
        if i % 100 == 7:
            f.add_done_callback(arrived(i // 100))
        futures.append(f)
    outcomes = []
    for f in futures:
        try:
            outcomes.append(f.result())
        except FutureTimeout as error:
            outcomes.append(error)
    dt = time.perf_counter() - t0

    ok = killed = 0
    for i, out in enumerate(outcomes):
        if isinstance(out, FutureTimeout) and i % 100 == 7:
            killed += 1
        elif out == i and i % 100 != 7:
            ok += 1
        else:
            raise SystemExit(f"pool_timeouts: task {i} gave {out!r}")
    if ok != n - len(hung) or killed != len(hung):
        raise SystemExit(f"pool_timeouts: {ok} ok and {killed} killed, "
                         f"expected {n - len(hung)} and {len(hung)}")
    late = []
    for k, i in enumerate(hung):
        if deadlines[k] == 0.0 or arrivals[k] == 0.0:
            raise SystemExit(f"pool_timeouts: hanging task {i}: deadline recorded "
                             f"{deadlines[k] != 0.0}, failure seen {arrivals[k] != 0.0}")
        late.append((arrivals[k] - deadlines[k]) * 1e3)
    return dt, late


def pool_timeouts(pebble, ctx, n, reps, verbose):
    hung = [i for i in range(n) if i % 100 == 7]
    ideal = (n * WORK + len(hung) * LIMIT) / WORKERS
    deadlines = ctx.RawArray("d", len(hung))
    lines = []
    times, rates, late = [], [], []
    with pebble.ProcessPool(max_workers=WORKERS, initializer=keep_deadlines,
                            initargs=(deadlines,), context=ctx) as pool:
        if pool.schedule(busy_or_hang, args=(0,)).result() != 0:
            raise SystemExit("pool_timeouts: the set-up task returned a wrong value")
        for rep in range(reps + 1):  # the first repetition is the untimed warm-up
            dt, round_late = one_round(pool, deadlines, n, hung)
            if verbose:
                print(f"#   pool_timeouts round {rep}: {dt:.3f} s, kill late p50 "
                      f"{statistics.median(round_late):.2f} ms max {max(round_late):.2f} ms",
                      file=sys.stderr, flush=True)
            if rep > 0:
                times.append(dt)
                rates.append(n / dt)
                late += round_late
    elapsed = statistics.median(times)
    lines.append(("throughput", statistics.median(rates), "tasks/s"))
    lines.append(("elapsed", elapsed, "s"))
    lines.append(("ideal_bound", ideal, "s"))
    lines.append(("ratio_to_ideal", elapsed / ideal, "s/s"))
    lines.append(("kill_late_p50", statistics.median(late), "ms"))
    lines.append(("kill_late_p99", quantile_99(late), "ms"))

    # bench.py's single kills: one hanging task at a time on one worker.
    past = []
    with pebble.ProcessPool(max_workers=1, context=ctx) as pool:
        for _ in range(SINGLE_KILLS):
            t0 = time.perf_counter()
            f = pool.schedule(busy_or_hang, args=(7,), timeout=LIMIT)
            try:
                f.result()
                raise SystemExit("pool_timeouts: a hanging task returned")
            except FutureTimeout:
                past.append((time.perf_counter() - t0 - LIMIT) * 1e3)
    lines.append(("kill_past_limit_p50", statistics.median(past), "ms"))
    lines.append(("kill_past_limit_max", max(past), "ms"))
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 tasks, 3 reps")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 5; quick 3)")
    parser.add_argument("--verbose", action="store_true", help="each round's figures on stderr")
    args = parser.parse_args()
    try:
        import pebble
    except ImportError:
        print("pool_timeouts: needs pebble (pip install pebble)", file=sys.stderr)
        return 1
    n = 2_000 if args.quick else 10_000
    reps = args.reps or (3 if args.quick else 5)
    print(f"# python {sys.version.split()[0]}, pebble {pebble.__version__}, start method fork, "
          f"{'quick' if args.quick else 'full'} mode", file=sys.stderr, flush=True)
    for metric, value, unit in pool_timeouts(pebble, mp.get_context("fork"), n, reps,
                                             args.verbose):
        line = {"scenario": "pool_timeouts", "metric": metric,
                "value": float(f"{value:.6g}"), "unit": unit}
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
