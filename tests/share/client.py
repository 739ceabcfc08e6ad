"""Independent STIX/TAXII tools for the sharing test, each printing JSON.

  validate FILE
      The OASIS validator's errors and warnings for a STIX 2.1 file, and
      how many objects the stix2 library parsed from it (strictly: no
      custom properties).
  taxii DISCOVERY_URL TOKEN PER_REQUEST
      With the OASIS taxii2-client: the server's discovery and API root,
      every collection the token may read, and every object of each, read
      in pages of PER_REQUEST.
  upload API_ROOT COLLECTION USER PASSWORD FILE
      Add a bundle's objects to a TAXII 2.1 collection (medallion), then
      read the collection back; prints the ids it holds.
"""

import json
import sys

import requests


class Bearer(requests.auth.AuthBase):
    def __init__(self, token):
        self.token = token

    def __call__(self, request):
        request.headers["Authorization"] = "Bearer " + self.token
        return request


def validate(path):
    import stix2
    from stix2validator import ValidationOptions, validate_file

    result = validate_file(path, ValidationOptions(version="2.1"))
    errors, warnings = [], []
    for obj in result.object_results:
        errors += [str(e) for e in obj.errors]
        warnings += [str(w) for w in obj.warnings]
    with open(path) as f:
        bundle = stix2.parse(f.read(), allow_custom=False)
    print(json.dumps({
        "valid": result.is_valid,
        "errors": errors,
        "warnings": warnings,
        "parsed": len(bundle.objects),
    }))


def taxii(url, token, per_request):
    from taxii2client.v21 import Server, as_pages

    server = Server(url, auth=Bearer(token))
    out = {"title": server.title, "api_roots": []}
    for root in server.api_roots:
        entry = {"url": root.url, "versions": root.versions, "collections": []}
        for collection in root.collections:
            objects = []
            for envelope in as_pages(collection.get_objects, per_request=per_request):
                objects += envelope.get("objects", [])
            manifest = collection.get_manifest()
            entry["collections"].append({
                "id": collection.id,
                "title": collection.title,
                "can_write": collection.can_write,
                "objects": objects,
                "manifest": manifest.get("objects", []),
            })
        out["api_roots"].append(entry)
    print(json.dumps(out))


def upload(api_root, collection_id, user, password, path):
    from taxii2client.v21 import Collection, as_pages

    url = api_root.rstrip("/") + "/collections/" + collection_id + "/"
    collection = Collection(url, user=user, password=password)
    with open(path) as f:
        bundle = json.load(f)
    status = collection.add_objects(json.dumps({"objects": bundle["objects"]}))
    ids = []
    for envelope in as_pages(collection.get_objects, per_request=50):
        ids += [o["id"] for o in envelope.get("objects", [])]
    print(json.dumps({"status": status.status, "success": status.success_count,
                      "failure": status.failure_count, "ids": ids}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "validate":
        validate(*args)
    elif command == "taxii":
        taxii(args[0], args[1], int(args[2]))
    elif command == "upload":
        upload(*args)
    else:
        sys.exit(f"unknown command {command!r}")
