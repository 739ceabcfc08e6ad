#!/usr/bin/env python3
"""Blocked first pass on the many-core device, beside PowerDNS Recursor.

Run by .devkit/all.sh after the kit's run-on-device.sh (which extracts the
kit and generates the RPZ zone and workloads under DEVKIT_WORK). Every
query of blocked.txt is a different listed name, once, so no answer cache
can help: what docs/performance.md calls "blocked, first pass". The kit's
device-bench.py is loaded as a module so processes are started, pinned,
measured and stopped exactly as in its cached and mixed runs.

Runs, each on a fresh start from the feed (or the RPZ): PowerDNS Recursor
(threads=1) on CPU 0; Portcullis (workers = 1, hit log on) on CPU 0, as in
peers.sh where its SQLite writer shares the core; the same with the hit
log off; Portcullis on CPUs 0-1, where the writer can have a core of its
own as it would on a server. PowerDNS and the one-CPU Portcullis run
twice, alternating. dnsperf gets CPUs 2 to the second last, NSD the last.
After each Portcullis run the hit log is counted: every blocked query
must be a record.

Results: OUT/first-pass.md and OUT/first-pass.json.
"""
import importlib.util
import json
import os
import shutil
import sqlite3
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
KIT = os.path.join(os.environ.get("DEVKIT_WORK", "/tmp/devkit"), "kit")
spec = importlib.util.spec_from_file_location("device_bench", os.path.join(KIT, "device-bench.py"))
db = importlib.util.module_from_spec(spec)
spec.loader.exec_module(db)

OURS = (db.LOOP, 5321)


def pass_once(name, cpus, hitlog):
    tag = f"fp-{name}-{'-'.join(map(str, cpus))}" + ("" if hitlog else "-nolog")
    d = os.path.join(db.RUN, tag)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    if name == "pdns":
        db.pdns_config(d, 1)
        argv = db.pinned(cpus, db.kbin("pdns_recursor", f"--config-dir={d}"))
        addr = db.PDNS
    else:
        flag = "true" if hitlog else "false"
        cmd = (f"PORTCULLIS_HITLOG={flag} exec {HERE}/portcullis-run.sh 1 {d} "
               f"{OURS[0]}:{OURS[1]} {db.UPSTREAM[0]}:{db.UPSTREAM[1]} {KIT}")
        argv = db.pinned(cpus, ["bash", "-c", cmd])
        addr = OURS
    t0 = time.time()
    p = db.start(tag, argv, f"{d}/stdout.log")
    if db.wait_answer(addr, db.SPOT["listed"], lambda a: a[0] == "NXDOMAIN", p, 120) is None:
        db.log(f"{tag}: not blocking: {db.tail(d + '/stdout.log', 300)}")
        db.stop(p, tag)
        return {"run": tag, "error": "not blocking"}
    load_s = round(time.time() - t0, 2)
    load = db.CPUS[2:-1] or db.CPUS[-1:]
    T = max(1, min(6, len(load) // 2))
    r = db.dnsperf(tag, addr, f"{db.WL}/blocked.txt", load, T, 128 * T, 128, ["-n", 1, "-l", 60], p.pid, limit=70)
    db.stop(p, tag)
    row = {"run": tag, "resolver": name, "cpus": db.cpus_str(cpus), "hitlog": hitlog if name != "pdns" else None,
           "load_s": load_s, "qps": r["qps"], "lat_ms": r["lat_ms"], "lost": r["lost"], "sent": r["sent"],
           "server_cpu_pct": r["server_cpu_pct"], "threads_pct": r["server_threads_pct"], "rcodes": r["rcodes"]}
    hits = os.path.join(d, "state", "hits.sqlite")
    if name != "pdns" and hitlog and os.path.exists(hits):
        with sqlite3.connect(hits) as conn:
            row["records"] = conn.execute("SELECT count(*) FROM hits").fetchone()[0]
    return row


def main():
    db.SPOT = dict(line.split(None, 1) for line in db.read(f"{db.GEN}/spot.txt").splitlines())
    upstream = db.start_nsd("upstream-fp", db.UPSTREAM, [db.CPUS[-1]], 1)
    if upstream is None:
        raise SystemExit("upstream NSD failed")
    plan = [("pdns", [0], True), ("portcullis", [0], True), ("pdns", [0], True), ("portcullis", [0], True),
            ("portcullis", [0], False), ("portcullis", [0, 1], True)]
    rows = []
    try:
        for name, cpus, hitlog in plan:
            rows.append(pass_once(name, cpus, hitlog))
    finally:
        db.stop_all()
    pdns = [r["qps"] for r in rows if r.get("resolver") == "pdns" and r.get("qps")]
    best_pdns = max(pdns) if pdns else None
    lines = ["| resolver | CPUs | hit log | start to blocking (s) | first pass q/s | vs best PowerDNS | lost | "
             "CPU % (threads) | hit records |", "|---|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | | | | error: {r['error']} | | | | |")
            continue
        ratio = f"{r['qps'] / best_pdns:.2f}x" if best_pdns and r["qps"] else "-"
        hl = {None: "-", True: "on", False: "off"}[r["hitlog"]]
        threads = ", ".join(f"{n} {v}" for v, n in r["threads_pct"][:3])
        lines.append(f"| {r['resolver']} | {r['cpus']} | {hl} | {r['load_s']} | {r['qps']:,} | {ratio} | "
                     f"{r['lost']} | {r['server_cpu_pct']} ({threads}) | {r.get('records', '-')} |")
    md = "\n".join(lines) + "\n"
    with open(os.path.join(db.OUT, "first-pass.md"), "w") as f:
        f.write(md)
    with open(os.path.join(db.OUT, "first-pass.json"), "w") as f:
        json.dump(rows, f, indent=1)
    print(md, flush=True)


if __name__ == "__main__":
    sys.exit(main())
