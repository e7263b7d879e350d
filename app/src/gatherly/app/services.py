"""The five services this build can host, by name."""

from __future__ import annotations

from gatherly.events import SERVICE as EVENTS
from gatherly.groups import SERVICE as GROUPS
from gatherly.images import SERVICE as IMAGES
from gatherly.kernel.runtime import ServiceDefinition
from gatherly.notifications import SERVICE as NOTIFICATIONS
from gatherly.users import SERVICE as USERS

# Start order matters only for readability of logs; services never call each other at start.
ALL: dict[str, ServiceDefinition] = {s.name: s for s in (USERS, GROUPS, EVENTS, NOTIFICATIONS, IMAGES)}
