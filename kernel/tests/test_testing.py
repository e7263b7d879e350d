"""The test-support helpers that other suites lean on."""

import socket

from gatherly.kernel.testing import _ephemeral_port_range, free_port


def test_a_free_port_is_bindable_and_outside_the_ephemeral_range() -> None:
    # Outgoing connections take ports from the ephemeral range; a server's port chosen there could be taken by a
    # client socket before the server binds it.
    low, high = _ephemeral_port_range()
    for _ in range(20):
        port = free_port()
        assert not low <= port <= high
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
