"""Reactions of the images service to other services' events."""

from gatherly.kernel.consumers import ConsumerRegistry

consumers = ConsumerRegistry()
