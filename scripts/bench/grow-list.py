#!/usr/bin/env python3
"""Grow the shared threat list to SIZE names, for the list-growth bench.

Writes a TSV feed (`name<TAB>category<TAB>family`) to standard output:
first the real names of threat-domains.tsv.gz, then generated ones until
SIZE, half each of
  * subdomains of real listed names, with the labels real threat hosts
    carry (www, mail, login, cdn, ...) or DGA-like random labels, and
  * new registrable names: pronounceable words with optional digits, under
    the top-level domains of the real list, in their real proportions.
A generated name takes the category and family of a real entry. The
output is the same for the same SIZE and SEED (default 1).

Usage: grow-list.py SIZE [DATA_DIR] [SEED] > list.tsv
"""
import gzip
import os
import random
import sys

size = int(sys.argv[1])
data = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.path.dirname(__file__), "..", "..", "..", "shared", "data")
rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 1)

base = []
with gzip.open(os.path.join(data, "threat-domains.tsv.gz"), "rt") as f:
    for line in f:
        if line.startswith("#") or not line.strip():
            continue
        cols = line.rstrip("\n").split("\t")
        while len(cols) < 3:
            cols.append("")
        base.append(cols[:3])

out = sys.stdout
seen = set()
for name, category, family in base[:size]:
    seen.add(name)
    out.write(f"{name}\t{category}\t{family}\n")

tlds = [b[0].rsplit(".", 1)[-1] for b in base if "." in b[0]]
hosts = ["www", "mail", "login", "secure", "account", "update", "cdn", "api",
         "app", "m", "static", "img", "dl", "download", "portal", "support",
         "vpn", "ns1", "ns2", "smtp", "webmail", "auth", "verify", "service"]
syllables = ["ka", "lo", "mi", "ne", "ro", "ta", "vi", "za", "qu", "shi", "an",
             "el", "or", "un", "ex", "pro", "net", "sec", "data", "cloud",
             "pay", "bank", "web", "soft", "tech", "info", "link", "host"]
alnum = "abcdefghijklmnopqrstuvwxyz0123456789"

while len(seen) < size:
    category, family = rng.choice(base)[1:3]
    if rng.random() < 0.5:
        parent = rng.choice(base)[0]
        if rng.random() < 0.6:
            label = rng.choice(hosts)
            if rng.random() < 0.3:
                label += str(rng.randint(1, 99))
        else:
            label = "".join(rng.choice(alnum) for _ in range(rng.randint(8, 16)))
        name = f"{label}.{parent}"
    else:
        word = "".join(rng.choice(syllables) for _ in range(rng.randint(2, 4)))
        if rng.random() < 0.3:
            word += str(rng.randint(1, 999))
        name = f"{word}.{rng.choice(tlds)}"
    if len(name) > 253 or name in seen:
        continue
    seen.add(name)
    out.write(f"{name}\t{category}\t{family}\n")
