"""The event catalog: an AsyncAPI 3 document generated from `contracts/` and the services' declarations —
channels are topics, messages are the integration events with their JSON Schemas and keys, operations say which
service publishes a topic and which consumer groups read which events — and its Markdown rendering (docs/events.md)."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from gatherly.contracts.base import IntegrationEvent, all_schemas
from gatherly.kernel.runtime import ServiceDefinition

SCHEMA_REF = "#/components/schemas/{model}"
CONTRACTS = "gatherly.contracts."

# What travels beside every payload (in Kafka as headers; in the embedded log in the record): docs/messaging.md.
ENVELOPE_HEADERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "Message id: consumers deduplicate on it."},
        "type": {"type": "string", "description": "The event type, e.g. group.created."},
        "schema_version": {"type": "integer"},
        "aggregate_type": {"type": "string", "description": "The topic."},
        "aggregate_id": {"type": "string", "description": "The message key."},
        "occurred_at": {"type": "string", "format": "date-time"},
        "correlation_id": {"type": ["string", "null"], "description": "The request id that caused it."},
        "causation_id": {"type": ["string", "null"], "description": "The message id that caused it."},
    },
}


def message_name(event: type[IntegrationEvent]) -> str:
    return f"{event.TYPE}.v{event.VERSION}"


def _doc(event: type[IntegrationEvent]) -> str:
    own = event.__dict__.get("__doc__")
    return inspect.cleandoc(own) if own else ""


def catalogued_events() -> list[type[IntegrationEvent]]:
    """The events of contracts/ (a test may register schemas of its own: they are not part of the system)."""
    return [event for event in all_schemas().values() if event.__module__.startswith(CONTRACTS)]


def asyncapi(services: Sequence[ServiceDefinition]) -> dict[str, Any]:
    """The AsyncAPI 3.0 document of every event in `contracts/` and of who publishes and consumes it."""
    events = sorted(catalogued_events(), key=lambda e: (e.TOPIC, e.TYPE, e.VERSION))
    schemas: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    channels: dict[str, Any] = {}
    for event in events:
        schema = event.model_json_schema(ref_template=SCHEMA_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[event.__name__] = schema
        name = message_name(event)
        messages[name] = {
            "name": event.TYPE,
            "title": event.__name__,
            "summary": _doc(event).split("\n\n")[0].replace("\n", " ") or event.TYPE,
            "contentType": "application/json",
            "headers": ENVELOPE_HEADERS,
            "payload": {"$ref": SCHEMA_REF.format(model=event.__name__)},
            "correlationId": {"location": "$message.header#/correlation_id"},
            "bindings": {"kafka": {"key": {"type": "string", "description": f"the {event.AGGREGATE_ID} field"}}},
            "x-key": event.AGGREGATE_ID,
            "x-schema-version": event.VERSION,
        }
        channel = channels.setdefault(
            event.TOPIC,
            {
                "address": event.TOPIC,
                "description": f"Topic `{event.TOPIC}`, keyed by {event.AGGREGATE_ID}: one aggregate's events "
                "keep their order.",
                "messages": {},
            },
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    operations: dict[str, Any] = {}
    for service in services:
        for topic in service.topics:
            operations[f"{service.name}_publishes_{topic}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"The {service.name} service publishes to `{topic}` (transactional outbox).",
                "messages": [{"$ref": f"#/channels/{topic}/messages/{m}"} for m in channels[topic]["messages"]],
                "x-service": service.name,
            }
        for group, spec in service.consumers.specs.items():
            for topic in sorted(spec.topics):
                handled = [message_name(e) for e in events if topic == e.TOPIC and e.TYPE in spec.handlers]
                operations[f"{group}_consumes_{topic}"] = {
                    "action": "receive",
                    "channel": {"$ref": f"#/channels/{topic}"},
                    "summary": f"Consumer group `{group}` ({service.name}) reads `{topic}`.",
                    "messages": [{"$ref": f"#/channels/{topic}/messages/{m}"} for m in handled],
                    "x-service": service.name,
                    "x-consumer-group": group,
                }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Gatherly events",
            "version": "1",
            "description": "Integration events between Gatherly's services (generated from contracts/). "
            "Consumers accept unknown fields; a breaking change is a new schema version.",
        },
        "defaultContentType": "application/json",
        "channels": dict(sorted(channels.items())),
        "operations": operations,
        "components": {"messages": messages, "schemas": dict(sorted(schemas.items()))},
    }


def markdown(document: dict[str, Any]) -> str:
    """docs/events.md: the catalog for people, one section per topic."""
    messages = document["components"]["messages"]
    schemas = document["components"]["schemas"]
    operations = document["operations"].values()
    lines = [
        "# Event catalog",
        "",
        "Generated from `contracts/` by `make docs` (the same document is served as AsyncAPI 3 at",
        "`/api/asyncapi.json`); `app/tests/test_documents.py` fails when this page or a service drifts from it.",
        "Every message carries the envelope of docs/messaging.md; the key is the aggregate id named below.",
        "",
    ]
    for topic, channel in document["channels"].items():
        ref = f"#/channels/{topic}"
        publishers = [op["x-service"] for op in operations if op["action"] == "send" and op["channel"]["$ref"] == ref]
        lines += [f"## Topic `{topic}`", ""]
        lines.append(f"Published by: {', '.join(publishers) or 'no service of this build yet'}.")
        lines.append("")
        for name in channel["messages"]:
            message = messages[name]
            consumers = [
                f"`{op['x-consumer-group']}`"
                for op in operations
                if op["action"] == "receive" and any(m["$ref"].endswith("/" + name) for m in op["messages"])
            ]
            schema = schemas[message["title"]]
            lines += [
                f"### `{message['name']}` (v{message['x-schema-version']}, key `{message['x-key']}`)",
                "",
                message["summary"],
                "",
                f"Consumed by: {', '.join(consumers) or 'nobody yet'}.",
                "",
                "| field | type | required |",
                "|---|---|---|",
            ]
            required = set(schema.get("required", []))
            for field, spec in schema.get("properties", {}).items():
                lines.append(f"| `{field}` | {_type_of(spec)} | {'yes' if field in required else 'no'} |")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _type_of(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return spec["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in spec:
        return " or ".join(_type_of(option) for option in spec["anyOf"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"list of {_type_of(spec.get('items', {}))}"
    if spec.get("format"):
        return f"{kind} ({spec['format']})"
    return str(kind)
