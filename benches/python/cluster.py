"""mpi4py.futures mirror of mp's cluster benchmark (benches/cluster.rs): the same scenarios,
sizes and median rule, printed as the same JSON lines with metrics prefixed `mpi4py_`.

    MPICC=mpicc.mpich pip install --no-binary=mpi4py mpi4py      # built against MPICH
    mpiexec.mpich -n 3 python3 -m mpi4py.futures benches/python/cluster.py [--quick]

Rank 0 runs this script; the other two ranks are mpi4py's workers (one worker per rank, so 2
workers, as in the Rust benchmark). `cargo bench --features mpi --bench cluster` runs it too.
"""

import json
import os
import statistics
import sys
import time

from mpi4py.futures import MPIPoolExecutor

QUICK = "--quick" in sys.argv
REPS = 3
WORKERS = 2


def size(full, quick):
    return quick if QUICK else full


def selected(name):
    if "--only" not in sys.argv:
        return True
    wanted = sys.argv[sys.argv.index("--only") + 1].split(",")
    return any(name.startswith(w) for w in wanted)


def emit(scenario, metric, value, unit):
    print(json.dumps({"scenario": scenario, "metric": metric,
                      "value": float(f"{value:.6g}"), "unit": unit}), flush=True)


def square(x):
    return x * x


def cpu_task(seed, iters):
    x = seed
    for _ in range(iters):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def echo(b):
    return b


def pid():
    return os.getpid()


def cpu_seconds(p):
    with open(f"/proc/{p}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def iters_per_ms():
    probe = 200_000
    t = time.perf_counter()
    cpu_task(1, probe)
    return max(1, int(probe / ((time.perf_counter() - t) * 1000)))


def main():
    p = "mpi4py"
    with MPIPoolExecutor() as ex:
        list(ex.map(square, range(1000)))
        if selected("cluster_dispatch"):
            # mpi4py.futures is far slower per item: fewer items, same chunk sizes.
            for chunk, full, quick in ((1, 4_000, 1_000), (16, 40_000, 10_000), (256, 400_000, 100_000)):
                n = size(full, quick)
                rates = []
                for _ in range(REPS):
                    t = time.perf_counter()
                    out = list(ex.map(square, range(n), chunksize=chunk))
                    rates.append(n / (time.perf_counter() - t))
                    assert len(out) == n and out[3] == 9
                emit("cluster_dispatch", f"{p}_chunk_{chunk}", statistics.median(rates), "items/s")
        if selected("cluster_latency"):
            rounds = size(4_000, 500)
            rtts = []
            for i in range(rounds + 100):
                t = time.perf_counter()
                assert ex.submit(square, i).result() == i * i
                if i >= 100:
                    rtts.append((time.perf_counter() - t) * 1e6)
            rtts.sort()
            emit("cluster_latency", f"{p}_p50", statistics.median(rtts), "us")
            emit("cluster_latency", f"{p}_p99", rtts[min(len(rtts) * 99 // 100, len(rtts) - 1)], "us")
        if selected("cluster_scaling"):
            iters = iters_per_ms()
            n = size(800, 200)
            rates = []
            for _ in range(REPS):
                t = time.perf_counter()
                list(ex.map(cpu_task, range(n), [iters] * n, chunksize=1))
                rates.append(n / (time.perf_counter() - t))
            rate = statistics.median(rates)
            emit("cluster_scaling", f"{p}_1ms_tasks", rate, "tasks/s")
            emit("cluster_scaling", f"{p}_efficiency", rate / (WORKERS * 1000.0), "fraction")
        if selected("cluster_payload"):
            mib = bytes([0x5A]) * (1 << 20)
            ms = []
            for _ in range(size(200, 40)):
                t = time.perf_counter()
                assert len(ex.submit(echo, mib).result()) == 1 << 20
                ms.append((time.perf_counter() - t) * 1e3)
            emit("cluster_payload", f"{p}_1mib_round_trip", statistics.median(ms), "ms")
            n = size(256, 64)
            rates = []
            for _ in range(REPS):
                t = time.perf_counter()
                list(ex.map(echo, [mib] * n, chunksize=1))
                rates.append(2 * n / (time.perf_counter() - t))
            emit("cluster_payload", f"{p}_1mib_both_ways", statistics.median(rates), "MiB/s")
        if selected("cluster_idle"):
            workers = sorted(set(f.result() for f in [ex.submit(pid) for _ in range(32)]))
            window = size(10, 3)
            before = [cpu_seconds(w) for w in workers]
            me = cpu_seconds("self")
            t = time.perf_counter()
            time.sleep(window)  # the measurement: the executor sits idle
            idle = time.perf_counter() - t
            worst = max((cpu_seconds(w) - b) / idle * 100 for w, b in zip(workers, before))
            emit("cluster_idle", f"{p}_agent_cpu", worst, "% of a core")
            emit("cluster_idle", f"{p}_rank0_cpu", (cpu_seconds("self") - me) / idle * 100, "% of a core")


if __name__ == "__main__":
    main()
