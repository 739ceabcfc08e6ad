#!/usr/bin/env python3
"""Summarise one `dnsperf -v` run: prints "q/s p50 p99 p99.9 lost", the
latencies in ms over every answer dnsperf printed ("> ..." lines), NA
where the run gave none. Used by tail-latency.sh and tail-ab.sh."""
import sys

latencies, qps, lost = [], "NA", "NA"
with open(sys.argv[1], errors="replace") as run:
    for line in run:
        if line.startswith("> "):
            try:
                latencies.append(float(line.split()[-1]))
            except ValueError:
                pass
        elif "Queries per second" in line:
            qps = f"{float(line.split()[-1]):.0f}"
        elif "Queries lost" in line:
            lost = line.split()[2]
latencies.sort()


def percentile(q):
    if not latencies:
        return "NA"
    return f"{latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000:.3f}"


print(qps, percentile(0.50), percentile(0.99), percentile(0.999), lost)
