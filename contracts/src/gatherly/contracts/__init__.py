"""Integration event schemas: the only thing services share about each other."""

from gatherly.contracts import events, groups, images, notifications, users
from gatherly.contracts.base import IntegrationEvent, all_schemas, schema_for

__all__ = ["IntegrationEvent", "all_schemas", "events", "groups", "images", "notifications", "schema_for", "users"]
