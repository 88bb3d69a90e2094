#!/usr/bin/env python3
"""pipe_pingpong_pairs for CPython's multiprocessing: the Python side of mp's scenario of that name.

    python3 benches/python/pipe_pingpong_pairs.py           # 8 pairs x 10,000 round trips, 5 reps
    python3 benches/python/pipe_pingpong_pairs.py --quick   # 8 pairs x 1,000 round trips, 3 reps

mp's ``benches/scenarios/channels.rs`` mirrors it; ``compare.py`` joins the two:

    python3 ../shared/bench/compare.py --only pipe_pingpong_pairs \\
        --python-cmd "python3 benches/python/pipe_pingpong_pairs.py"

- Set-up, once: 8 pairs, each an echo child (``recv`` then ``send`` back until ``None``) and a
  pinger child joined by a duplex ``Pipe``; each pinger has a control pipe to the parent. 16
  children on the machine's CPUs (start method fork), started outside the timed region.
- Repetition: the parent sends ``1`` to every pinger, each makes 10,000 round trips of a small
  int (checking the echo) and answers ``n``; timed from the first ``1`` to the last answer.
- Sample: ``8 * 10,000 / elapsed``; one untimed warm-up, then the median of the timed samples.
- Line: ``{"scenario": "pipe_pingpong_pairs", "metric": "total_rate", "value": ..., "unit":
  "round trips/s"}``. (mp also reports ``total_rate_no_spin``, the same with its spin before
  sleeping disabled, and ``idle_recv_cpu``.)
"""

import argparse
import json
import multiprocessing as mp
import statistics
import sys
import time

PAIRS = 8


def echo(conn):
    while True:
        msg = conn.recv()
        if msg is None:
            return
        conn.send(msg)


def pinger(conn, gate, n):
    while gate.recv() == 1:
        for i in range(n):
            conn.send(i)
            if conn.recv() != i:
                raise SystemExit("pipe_pingpong_pairs: wrong echo")
        gate.send(n)
    conn.send(None)


def pipe_pingpong_pairs(ctx, n, reps):
    gates, procs = [], []
    for _ in range(PAIRS):
        a, b = ctx.Pipe()
        gate, child_gate = ctx.Pipe()
        procs.append(ctx.Process(target=echo, args=(b,), daemon=True))
        procs.append(ctx.Process(target=pinger, args=(a, child_gate, n), daemon=True))
        gates.append(gate)
    for p in procs:
        p.start()
    rates = []
    for rep in range(reps + 1):  # the first repetition is the untimed warm-up
        t0 = time.perf_counter()
        for g in gates:
            g.send(1)
        for g in gates:
            if g.recv() != n:
                raise SystemExit("pipe_pingpong_pairs: a pinger did not finish")
        dt = time.perf_counter() - t0
        if rep > 0:
            rates.append(PAIRS * n / dt)
    for g in gates:
        g.send(0)
    for p in procs:
        p.join(60)
        if p.exitcode != 0:
            raise SystemExit(f"pipe_pingpong_pairs: child {p.name} ended with {p.exitcode}")
    return statistics.median(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 round trips a pair, 3 reps")
    parser.add_argument("--reps", type=int, help="timed repetitions (default 5; quick 3)")
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    reps = args.reps or (3 if args.quick else 5)
    value = pipe_pingpong_pairs(mp.get_context("fork"), n, reps)
    line = {"scenario": "pipe_pingpong_pairs", "metric": "total_rate",
            "value": float(f"{value:.6g}"), "unit": "round trips/s"}
    print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
