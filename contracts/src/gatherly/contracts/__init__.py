"""Integration event schemas: the only thing services share about each other."""

from gatherly.contracts import images, users
from gatherly.contracts.base import IntegrationEvent, all_schemas, schema_for

__all__ = ["IntegrationEvent", "all_schemas", "images", "schema_for", "users"]
