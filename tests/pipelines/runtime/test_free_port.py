"""ray_env.free_loopback_port: the port chosen for a local GCS (and the tests' servers) is one the kernel
does not hand to a process binding port 0, so another Ray instance starting beside it cannot take it
between the choice and the GCS's bind."""

from __future__ import annotations

import socket

from pipelines.runtime.ray_env import ephemeral_ports, free_loopback_port


def test_the_port_is_free_and_outside_the_ephemeral_range():
    low, _ = ephemeral_ports()
    ports = {free_loopback_port() for _ in range(20)}
    assert all(20000 <= p < min(low, 32768) for p in ports), ports
    assert len(ports) > 1  # drawn, not one fixed port two instances would both take
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # free when chosen


def test_a_taken_port_is_not_chosen(monkeypatch):
    from pipelines.runtime import ray_env

    with socket.socket() as held:
        held.bind(("127.0.0.1", free_loopback_port()))
        taken = held.getsockname()[1]
        draws = iter([taken, taken, taken + 1 if taken + 1 < 32768 else taken - 1])

        class Draws:  # the random draws: the taken port twice, then its neighbour
            def randrange(self, low, high):
                return next(draws)

        monkeypatch.setattr(ray_env.random, "Random", Draws)
        assert free_loopback_port() != taken
