"""Eager writes on Twisted transports: sent at once when idle, Twisted's buffer otherwise; a
response's head sent with its first body bytes."""

from __future__ import annotations

import socket

import pytest
from twisted.internet import abstract
from twisted.internet.address import IPv4Address
from twisted.web import http

from llamaproxy.daphne_tuning import _head_with_body, eager_write, eager_write_sequence


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


class Sends:
    """A connection's transport that records each write as one send."""

    def __init__(self) -> None:
        self.sends: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.sends.append(data)

    def writeSequence(self, iovec) -> None:
        self.sends.append(b"".join(iovec))

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8585)


@pytest.fixture
def head_with_body(monkeypatch) -> None:
    monkeypatch.setattr(http.Request, "write", http.Request.write)  # put back after the test
    _head_with_body()


def request(method: bytes = b"POST", length: int | None = None) -> tuple[http.Request, Sends]:
    channel = http.HTTPChannel()
    channel.transport = transport = Sends()
    req = http.Request(channel)
    req.method, req.clientproto = method, b"HTTP/1.1"
    if length is not None:
        req.setHeader(b"Content-Length", b"%d" % length)
    return req, transport


def test_a_whole_answer_goes_out_with_its_head_in_one_send(head_with_body) -> None:
    req, transport = request(length=4)
    req.write(b"done")
    assert len(transport.sends) == 1
    head, _, body = transport.sends[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 4" in head and body == b"done"


def test_a_stream_sends_its_head_with_the_first_chunk_then_a_send_per_chunk(head_with_body) -> None:
    req, transport = request()
    req.write(b"one")
    req.write(b"two")
    assert len(transport.sends) == 2
    assert b"Transfer-Encoding: chunked" in transport.sends[0]
    assert transport.sends[0].endswith(b"\r\n\r\n3\r\none\r\n") and transport.sends[1] == b"3\r\ntwo\r\n"


def test_a_head_request_sends_the_head_alone(head_with_body) -> None:
    req, transport = request(method=b"HEAD", length=4)
    req.write(b"done")
    assert len(transport.sends) == 1 and transport.sends[0].endswith(b"\r\n\r\n")


def test_whether_a_connection_is_tls_is_asked_once_per_transport(monkeypatch) -> None:
    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    from llamaproxy.daphne_tuning import _secure_per_connection

    asked = []
    original = http.HTTPChannel.isSecure
    monkeypatch.setattr(http.HTTPChannel, "isSecure", lambda self: asked.append(1) or original(self))
    _secure_per_connection()
    channel = http.HTTPChannel()
    channel.transport = Sends()
    assert [channel.isSecure() for _ in range(3)] == [False] * 3 and len(asked) == 1
    tls = Sends()
    directlyProvides(tls, ISSLTransport)
    channel.transport = tls  # another transport: asked again
    assert channel.isSecure() and channel.isSecure() and len(asked) == 2


@pytest.mark.parametrize(("verbosity", "logged"), [(1, False), (2, True)])
def test_twisteds_access_log_is_made_only_where_it_goes_somewhere(monkeypatch, verbosity, logged) -> None:
    from types import SimpleNamespace

    from daphne.http_protocol import HTTPFactory

    from llamaproxy.daphne_tuning import _no_discarded_access_log

    monkeypatch.setattr(HTTPFactory, "startFactory", HTTPFactory.startFactory)  # put back after the test
    _no_discarded_access_log()
    factory = object.__new__(HTTPFactory)  # no reactor, no clock: only what startFactory reads
    factory.server, factory.logPath, factory._logDateTimeCall = (
        SimpleNamespace(verbosity=verbosity),
        None,
        True,
    )
    formatted = []
    factory._logFormatter = lambda when, request: formatted.append(request) or "line"
    factory._logDateTime = "now"
    factory.startFactory()
    factory.log(object())
    assert bool(formatted) is logged


def test_daphne_reaches_twisteds_http_module_itself_and_hashes_requests_by_identity(monkeypatch) -> None:
    from daphne import http_protocol
    from twisted.python import deprecate

    from llamaproxy.daphne_tuning import _http_module_itself, _identity_hash

    monkeypatch.setattr(http_protocol, "http", http_protocol.http)  # put back after the test
    monkeypatch.setattr(http_protocol.WebRequest, "__hash__", http_protocol.WebRequest.__hash__)
    proxied = http_protocol.http
    _http_module_itself()
    _identity_hash()
    assert not isinstance(http_protocol.http, deprecate._ModuleProxy)
    assert http_protocol.http.Request is proxied.Request and http_protocol.http.__name__ == "twisted.web.http"
    request = object.__new__(http_protocol.WebRequest)
    other = object.__new__(http_protocol.WebRequest)
    connections = {request: "one", other: "two"}
    assert connections[request] == "one" and connections[other] == "two"
