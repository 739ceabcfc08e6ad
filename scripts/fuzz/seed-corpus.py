#!/usr/bin/env python3
"""Seed the fuzz corpora with queries as real stub resolvers send them,
for names people actually query (../shared/data/popular-fqdns.txt) and
names threat feeds list (threat-domains.tsv.gz): glibc's plain A/AAAA,
systemd-resolved's and Unbound's EDNS with DO, dig's AD with a cookie,
and ANY. Usage: seed-corpus.py DATA_DIR CORPUS_DIR [COUNT]."""

import gzip
import os
import random
import struct
import sys


def name_wire(name):
    out = b""
    for label in name.strip(".").split("."):
        raw = label.encode("idna") if not label.isascii() else label.encode()
        if not raw or len(raw) > 63:
            return None
        out += bytes([len(raw)]) + raw
    out += b"\0"
    return out if len(out) <= 255 else None


def query(name, qtype, flags, edns=None):
    wire = name_wire(name)
    if wire is None:
        return None
    qid = random.randrange(65536)
    header = struct.pack(">HHHHHH", qid, flags, 1, 0, 0, 1 if edns else 0)
    body = wire + struct.pack(">HH", qtype, 1)
    if edns:
        payload, do, options = edns
        body += b"\0" + struct.pack(">HHBBHH", 41, payload, 0, 0, 0x8000 if do else 0, len(options)) + options
    return header + body


def main():
    data, corpus = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 2000
    random.seed(8482)
    names = []
    with open(os.path.join(data, "popular-fqdns.txt")) as f:
        names += [l.strip() for l in f if l.strip()][: count // 2]
    with gzip.open(os.path.join(data, "threat-domains.tsv.gz"), "rt") as f:
        for i, line in enumerate(f):
            if i >= count // 2:
                break
            names.append(line.split("\t")[0])
    cookie = struct.pack(">HH", 10, 8) + bytes(8)
    shapes = [
        (1, 0x0100, None),  # glibc: A, RD
        (28, 0x0100, None),  # glibc: AAAA
        (1, 0x0100, (1232, True, b"")),  # resolved / Unbound: EDNS, DO
        (65, 0x0100, (1232, False, b"")),  # HTTPS record, EDNS
        (1, 0x0120, (1232, False, cookie)),  # dig: AD, a cookie
        (255, 0x0100, None),  # ANY
    ]
    targets = ["dns_question", "dns_fast_path", "packet_cache"]
    for t in targets:
        os.makedirs(os.path.join(corpus, t), exist_ok=True)
    written = 0
    for i, name in enumerate(names):
        qtype, flags, edns = shapes[i % len(shapes)]
        q = query(name, qtype, flags, edns)
        if q is None:
            continue
        for t in targets:
            # packet_cache's input starts with where the query ends.
            body = bytes([min(len(q), 255)]) + q if t == "packet_cache" else q
            with open(os.path.join(corpus, t, f"seed-{i:05}"), "wb") as f:
                f.write(body)
        written += 1
    print(f"{written} seed queries in each of {', '.join(targets)}")


if __name__ == "__main__":
    main()
