"""Reactions of the events service to other services' events."""

from gatherly.kernel.delivery import ConsumerRegistry

consumers = ConsumerRegistry()
