#!/usr/bin/env bash
# Run one `gatherly` command as a service, in its namespace, in a one-off pod made from the service's Deployment
# (same image, settings, database secret, labels, so the network policies let it reach the database and Kafka).
# Works while the Deployment is scaled to 0, which `gatherly replay <group>` needs (it refuses while the group runs).
#   bash scripts/k8s-gatherly.sh <namespace> <service> <gatherly arguments...>
#   e.g. bash scripts/k8s-gatherly.sh gatherly groups replay groups.profiles
set -euo pipefail
namespace="${1:?usage: k8s-gatherly.sh <namespace> <service> <gatherly arguments...>}"
service="${2:?usage: k8s-gatherly.sh <namespace> <service> <gatherly arguments...>}"
shift 2
[ "$#" -gt 0 ] || { echo "give the gatherly command to run, e.g. replay <group>" >&2; exit 2; }
pod="gatherly-$service-oneoff-$(date +%s)"

kubectl -n "$namespace" get deployment "gatherly-$service" -o json | python3 -c '
import json, sys
deployment = json.load(sys.stdin)
pod_name, arguments = sys.argv[1], sys.argv[2:]
template = deployment["spec"]["template"]
spec = template["spec"]
spec["restartPolicy"] = "Never"
container = spec["containers"][0]
container["args"] = arguments
for probe in ("startupProbe", "livenessProbe", "readinessProbe", "lifecycle"):
    container.pop(probe, None)
labels = {**template["metadata"].get("labels", {}), "app.kubernetes.io/instance": pod_name}
print(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod_name, "labels": labels}, "spec": spec}))
' "$pod" "$@" | kubectl -n "$namespace" create -f -

trap 'kubectl -n "$namespace" delete pod "$pod" --wait=false >/dev/null' EXIT
# Logs can be followed once the container started (it may also have finished already).
until [ "$(kubectl -n "$namespace" get pod "$pod" -o jsonpath='{.status.phase}')" != Pending ]; do sleep 1; done
kubectl -n "$namespace" logs -f "$pod"
phase="$(kubectl -n "$namespace" get pod "$pod" -o jsonpath='{.status.phase}')"
[ "$phase" = Succeeded ]
