"""JSON schemas for kubeconform, which validates the rendered manifests (`make deploy-check`) without a network.

    uv run python scripts/kube_schemas.py crd OUT_DIR CRD.yaml...   (files, or `-` for standard input)
Turns operators' CustomResourceDefinitions into OUT_DIR/<group>/<kind>_<version>.json for every served version
(kubeconform's `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` layout), strict: an object that
lists its properties and does not say otherwise refuses unknown ones, so a misspelt field fails the check. The
vendored schemas in deploy/k8s/schemas/ were made with it; deploy/k8s/schemas/SOURCES.md says from what.

    uv run python scripts/kube_schemas.py builtin OUT_DIR KUBERNETES_VERSION
Writes standalone strict schemas of the built-in kinds (OUT_DIR/<kind>-<group>-<version>.json, kubeconform's
`{{ .ResourceKind }}{{ .KindSuffix }}.json` layout) from the ones the kubernetes-validate package ships: those
point at a shared `/api/_definitions.json`, and kubeconform resolves no reference, so the definitions are inlined.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(schema: Any, *, closed: bool = True) -> Any:
    """The schema with Kubernetes' extensions turned into plain JSON Schema and unknown properties refused.
    Branches of oneOf/anyOf/allOf/not only constrain which listed fields appear together (structural schemas), so
    they stay open."""
    if isinstance(schema, list):
        return [strict(item, closed=closed) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: strict(value, closed=closed and key not in ("oneOf", "anyOf", "allOf", "not"))
        for key, value in schema.items()
        if key != "properties"
    }
    if "properties" in schema:  # a map of field name → schema (a field may be called "properties" itself)
        out["properties"] = {name: strict(value, closed=closed) for name, value in schema["properties"].items()}
    if out.pop("x-kubernetes-int-or-string", False):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    preserves = out.get("x-kubernetes-preserve-unknown-fields", False)
    if closed and "properties" in out and "additionalProperties" not in out and not preserves:
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


def write_crd_schemas(out_dir: str, *paths: str) -> None:
    for path in paths:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for document in yaml.safe_load_all(text):
            if not document or document.get("kind") != "CustomResourceDefinition":
                continue
            for name, schema in schemas_of(document).items():
                target = Path(out_dir) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
                sys.stdout.write(f"{target}\n")


# A kind's file points into the shared file; the shared definitions point at each other.
DEFINITION_REFS = ("/api/_definitions.json#/$defs/", "#/$defs/")


def inlined(schema: Any, definitions: dict[str, Any], seen: tuple[str, ...] = ()) -> Any:
    """The schema with every reference into the shared definitions replaced by the definition itself (kubeconform
    compiles a schema on its own and resolves no reference). A definition met again inside itself (only
    CustomResourceDefinition's JSONSchemaProps) becomes an open schema there."""
    if isinstance(schema, list):
        return [inlined(item, definitions, seen) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = str(schema.get("$ref", ""))
    if ref.startswith(DEFINITION_REFS):
        name = ref.rsplit("/", 1)[1]
        siblings = {key: value for key, value in schema.items() if key != "$ref"}
        if name in seen:
            return siblings
        return {**inlined(definitions[name], definitions, (*seen, name)), **inlined(siblings, definitions, seen)}
    return {key: inlined(value, definitions, seen) for key, value in schema.items()}


def write_builtin_schemas(out_dir: str, kubernetes_version: str) -> None:
    import kubernetes_validate

    source = (
        Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{kubernetes_version}-local-strict"
    )
    definitions = json.loads((source / "_definitions.json").read_text())["$defs"]
    target_dir = Path(out_dir)
    target_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("*.json")):
        schema = json.loads(path.read_text())
        if path.name.startswith("_") or "x-kubernetes-group-version-kind" not in schema:
            continue  # the shared definitions, or a part of a kind (a spec, a status), never a document of its own
        standalone = inlined(schema, definitions)
        standalone.pop("$schema", None)
        (target_dir / path.name).write_text(json.dumps(standalone, separators=(",", ":")))


if __name__ == "__main__":
    command, *arguments = sys.argv[1:]
    if command == "crd":
        write_crd_schemas(*arguments)
    elif command == "builtin":
        write_builtin_schemas(*arguments)
    else:
        sys.exit(f"unknown command {command!r}: crd or builtin")
