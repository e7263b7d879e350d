"""Turn operators' CustomResourceDefinitions into the JSON schemas kubeconform validates custom resources with.

Usage: uv run python scripts/crd_schemas.py OUT_DIR CRD.yaml... (files, or `-` for standard input). Writes
OUT_DIR/<group>/<kind>_<version>.json for every served version (kubeconform's
`{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` layout), strict: an object that lists its
properties and does not say otherwise refuses unknown ones, so a misspelt field fails the check.
The vendored schemas in deploy/k8s/schemas/ were made with it; deploy/k8s/schemas/SOURCES.md says from what.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any) -> Any:
    """The schema with Kubernetes' extensions turned into plain JSON Schema and unknown properties refused."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserves = out.get("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserves:
        out["additionalProperties"] = False
    return out


def schemas_of(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`<group>/<kind>_<version>.json` → schema, for each served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"].lower()
    found = {}
    for version in spec["versions"]:
        if not version.get("served", True) or "schema" not in version:
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        found[f"{group}/{kind}_{version['name']}.json"] = schema
    return found


def main(out_dir: str, *paths: str) -> None:
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for document in yaml.safe_load_all(text):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schemas_of(document).items():
                target = Path(out_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
                print(target)


if __name__ == "__main__":
    main(*sys.argv[1:])
