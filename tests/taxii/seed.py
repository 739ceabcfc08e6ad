#!/usr/bin/env python3
"""Add STIX 2.1 indicators, made with the stix2 library, to a TAXII 2.1
collection (the medallion test server) through its API.

usage: seed.py API_ROOT USER PASSWORD COLLECTION FIRST COUNT
Creates domain indicators taxii-FIRST.example.test .. and, in the first
batch, one URL-with-path indicator (which must not become a block).
"""
import base64
import json
import sys
import urllib.request

import stix2

api_root, user, password, collection, first, count = sys.argv[1:]
first, count = int(first), int(count)
indicators = [
    stix2.Indicator(
        pattern=f"[domain-name:value = 'taxii-{i}.example.test']",
        pattern_type="stix",
        indicator_types=["malicious-activity"],
        valid_from="2026-01-01T00:00:00Z",
    )
    for i in range(first, first + count)
]
if first == 0:
    indicators.append(
        stix2.Indicator(
            pattern="[url:value = 'http://www.example.test/payload.exe']",
            pattern_type="stix",
            indicator_types=["malicious-activity"],
            valid_from="2026-01-01T00:00:00Z",
        )
    )
bundle = stix2.Bundle(objects=indicators)
envelope = {"objects": json.loads(bundle.serialize())["objects"]}
auth = base64.b64encode(f"{user}:{password}".encode()).decode()
request = urllib.request.Request(
    f"{api_root}collections/{collection}/objects/",
    data=json.dumps(envelope).encode(),
    method="POST",
    headers={
        "Content-Type": "application/taxii+json;version=2.1",
        "Accept": "application/taxii+json;version=2.1",
        "Authorization": f"Basic {auth}",
    },
)
with urllib.request.urlopen(request) as response:
    status = json.load(response)
print(json.dumps({"success_count": status.get("success_count"), "ids": [o.id for o in indicators]}))
