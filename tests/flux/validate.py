"""Checks every document on stdin (YAML, as `retagd export flux` prints) against the vendored
schema of its kind (see README.md); prints one line per problem and exits 1 when there is any."""
import json
import pathlib
import sys

import jsonschema
import yaml

HERE = pathlib.Path(__file__).parent
SCHEMAS = {
    "ImageRepository": json.loads((HERE / "imagerepository.v1.json").read_text()),
    "ImagePolicy": json.loads((HERE / "imagepolicy.v1.json").read_text()),
}

problems = []
docs = [d for d in yaml.safe_load_all(sys.stdin) if d is not None]
for i, doc in enumerate(docs):
    kind = doc.get("kind") if isinstance(doc, dict) else None
    schema = SCHEMAS.get(kind)
    if schema is None:
        problems.append(f"document {i}: kind {kind!r} is not one retagd exports")
        continue
    validator = jsonschema.Draft7Validator(schema)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        where = ".".join(str(p) for p in e.path) or "(root)"
        problems.append(f"{kind} {doc.get('metadata', {}).get('name')}: {where}: {e.message}")
    spec = doc.get("spec") or {}
    # The CEL rules of ImagePolicy.spec.
    if kind == "ImagePolicy":
        always = spec.get("digestReflectionPolicy") == "Always"
        if "interval" in spec and not always:
            problems.append(f"ImagePolicy {doc['metadata']['name']}: spec.interval is only accepted with digestReflectionPolicy Always")
        if always and "interval" not in spec:
            problems.append(f"ImagePolicy {doc['metadata']['name']}: spec.interval must be set with digestReflectionPolicy Always")
for p in problems:
    print(p)
print(f"{len(docs)} document(s), {len(problems)} problem(s)")
sys.exit(1 if problems else 0)
