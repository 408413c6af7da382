"""Check recorded answers of the HTTP API against its OpenAPI document.

    python openapi_check.py DOCUMENT.json ANSWERS.json

ANSWERS is a list of {"path", "method", "status", "content_type", "body"}: `path` as the
document writes it (`/tasks/{id}`), `body` the JSON answer or null. Each answer's status must be
one the document lists for that operation, its content type one listed for that status, and a
JSON body must be valid (JSON Schema 2020-12) against the schema listed for it, the document's
`$ref`s resolved within it. Prints one line per answer; exits 1 when any is wrong.
"""

import json
import sys

from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOC_URI = "urn:switchyard:openapi"


def pointer(*parts):
    return "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    doc = json.load(open(sys.argv[1]))
    answers = json.load(open(sys.argv[2]))
    registry = Registry().with_resource(DOC_URI, Resource.from_contents(doc, default_specification=DRAFT202012))
    wrong = 0
    for a in answers:
        where = f"{a['method'].upper()} {a['path']} → {a['status']}"
        op = doc["paths"].get(a["path"], {}).get(a["method"].lower())
        if op is None:
            print(f"WRONG {where}: no such operation in the document")
            wrong += 1
            continue
        status = str(a["status"])
        if status not in op["responses"]:
            print(f"WRONG {where}: the document lists only {sorted(op['responses'])}")
            wrong += 1
            continue
        response = op["responses"][status]
        content = response.get("content", {})
        media = (a.get("content_type") or "").split(";")[0].strip()
        listed = {m.split(";")[0].strip(): m for m in content}
        if not content:
            if a.get("body") is not None:
                print(f"WRONG {where}: a body where the document lists none")
                wrong += 1
                continue
            print(f"ok    {where} (no body)")
            continue
        if media not in listed:
            print(f"WRONG {where}: content type {media!r}; the document lists {sorted(content)}")
            wrong += 1
            continue
        if media != "application/json":
            print(f"ok    {where} ({media})")
            continue
        ref = {"$ref": DOC_URI + "#/" + pointer("paths", a["path"], a["method"].lower(), "responses", status,
                                               "content", listed[media], "schema")}
        errors = list(Draft202012Validator(ref, registry=registry).iter_errors(a["body"]))
        if errors:
            wrong += 1
            print(f"WRONG {where}: the body does not match the documented schema")
            for e in errors[:5]:
                print(f"      at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}")
            print(f"      body: {json.dumps(a['body'])[:2000]}")
        else:
            print(f"ok    {where}")
    print(f"answers: {len(answers) - wrong} as documented, {wrong} not")
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
