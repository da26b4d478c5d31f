"""Commands fall back to a local Spark session when the Connect server is not listening."""

from __future__ import annotations

import socket

from rankflow.lake.session import listening


def test_a_listening_port_is_seen_and_a_closed_one_is_not() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert listening(f"sc://127.0.0.1:{port}/;token=secret")
    assert not listening(f"sc://127.0.0.1:{port}", timeout=0.5)
