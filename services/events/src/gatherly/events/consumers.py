"""Reactions of the events service to other services' events."""

from gatherly.kernel.consumers import ConsumerRegistry

consumers = ConsumerRegistry()
