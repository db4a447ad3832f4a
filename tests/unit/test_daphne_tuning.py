"""Eager writes on Twisted transports: sent at once when idle, Twisted's buffer otherwise."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import abstract

from llamaproxy.daphne_tuning import eager_write, eager_write_sequence


class Probe(abstract.FileDescriptor):
    """A FileDescriptor over one end of a socketpair that records when Twisted would poll."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(reactor=object())
        self.sock = self.socket = sock
        self.connected = 1
        self.polls = 0

    def writeSomeData(self, data: bytes) -> int:
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0

    def startWriting(self) -> None:
        self.polls += 1

    def buffered(self) -> bytes:
        return self.dataBuffer[self.offset :] + b"".join(self._tempDataBuffer)


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.settimeout(1)
    yield a, b
    a.close()
    b.close()


def test_an_idle_transport_sends_at_once_without_polling(pair) -> None:
    a, b = pair
    probe = Probe(a)
    eager_write(probe, b"data: one\n\n")
    eager_write_sequence(probe, [b"5\r\n", b"hello", b"\r\n"])
    assert b.recv(100) == b"data: one\n\n5\r\nhello\r\n"
    assert probe.polls == 0 and probe.buffered() == b""


def test_buffered_data_keeps_its_order(pair) -> None:
    a, b = pair
    probe = Probe(a)
    probe._tempDataBuffer, probe._tempDataLen = [b"first "], 6
    eager_write(probe, b"second")
    assert probe.buffered() == b"first second" and probe.polls == 1
    with pytest.raises(TimeoutError):
        b.recv(100)


def test_what_the_socket_does_not_take_is_left_to_twisted(pair) -> None:
    a, _ = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    probe = Probe(a)
    payload = bytes(range(256)) * 4096  # 1 MiB: more than the socket takes at once
    eager_write(probe, payload)
    rest = probe.buffered()
    assert 0 < len(rest) < len(payload) and payload.endswith(rest) and probe.polls == 1


def test_a_closing_transport_is_not_written_eagerly(pair) -> None:
    a, _ = pair
    probe = Probe(a)
    probe.disconnecting = True
    eager_write(probe, b"late")
    assert probe.buffered() == b"late" and probe.polls == 1


def test_a_send_that_fails_leaves_the_data_to_twisted_which_finds_the_loss(pair) -> None:
    a, b = pair
    b.close()  # the client is gone: the send fails with EPIPE
    probe = Probe(a)
    eager_write(probe, b"orphan")
    assert probe.buffered() == b"orphan" and probe.polls == 1
