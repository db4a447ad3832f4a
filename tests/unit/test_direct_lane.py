"""daphne's direct lane: a request on one of its routes reaches the handler with the very scope and
body daphne's ASGI path would give it; anything out of the plain case goes daphne's own way."""

from __future__ import annotations

import asyncio
import io
from types import SimpleNamespace

import pytest
from daphne.http_protocol import WebRequest
from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.web import http

from llamaproxy import daphne_tuning
from llamaproxy.daphne_tuning import DirectSend, abort, body_writer, direct_lane, on_connection_lost

PORT = 8585
ROUTE = b"/v1/completions"
BODY = b'{"model": "tiny-chat", "prompt": "Hello"}'
UPLOADS = b"/api/blobs/"


class Transport:
    def __init__(self, peer=None) -> None:
        self.sends: list[bytes] = []
        self.peer = peer or IPv4Address("TCP", "127.0.0.1", 40000)
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.sends.append(data)

    def writeSequence(self, iovec) -> None:
        self.sends.append(b"".join(iovec))

    def getPeer(self):
        return self.peer

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", PORT)

    def abortConnection(self) -> None:
        self.aborted = True


class Server:
    """What daphne's WebRequest asks of its server, and what daphne's own path hands over."""

    def __init__(self, proxy_header: str | None = None) -> None:
        self.connections: dict = {}
        self.root_path = ""
        self.server_name = "daphne"
        self.proxy_forwarded_address_header = proxy_header
        self.proxy_forwarded_port_header = None
        self.proxy_forwarded_proto_header = None
        self.request_buffer_size = 8192
        self.created: list[dict] = []  # scopes daphne's own path made applications for
        self.logged: list[dict] = []

    def protocol_connected(self, protocol) -> None:
        self.connections[protocol] = {}

    def protocol_disconnected(self, protocol) -> None:
        self.connections[protocol].setdefault("disconnected", True)

    def create_application(self, protocol, scope):
        scope.setdefault("asgi", {"version": "3.0"})
        self.created.append(scope)
        return asyncio.Queue()

    def log_action(self, protocol: str, action: str, details: dict) -> None:
        self.logged.append(details)


def web_request(
    server: Server,
    *,
    uri: bytes = ROUTE,
    method: bytes = b"POST",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = BODY,
    peer=None,
) -> tuple[WebRequest, Transport]:
    channel = http.HTTPChannel()
    channel.transport = transport = Transport(peer)
    channel.factory = SimpleNamespace(server=server, log=lambda request: None)
    channel.requestDone = lambda request: None  # (the channel's own bookkeeping of its request queue)
    request = WebRequest(channel)
    request.method, request.uri, request.clientproto = method, uri, b"HTTP/1.1"
    request.path = uri.split(b"?", 1)[0]
    for name, value in headers or [
        (b"Host", b"127.0.0.1:8585"),
        (b"Content-Type", b"application/json"),
        (b"Authorization", b"Bearer sk-1"),
        (b"Content-Length", b"%d" % len(body)),
    ]:
        request.requestHeaders.addRawHeader(name, value)
    request.content = io.BytesIO(body)
    return request, transport


@pytest.fixture
def lane(monkeypatch):
    """The lane installed over daphne's own `process` (put back after the test); yields the calls
    its handler got."""
    monkeypatch.setattr(WebRequest, "process", WebRequest.process)
    calls: list[tuple[dict, bytes, DirectSend]] = []

    async def handle(scope: dict, body: bytes, send: DirectSend) -> None:
        calls.append((scope, body, send))

    direct_lane({(PORT, ROUTE)}, handle, max_body=1024, file_routes={(PORT, UPLOADS)})
    yield calls
    if hasattr(WebRequest, "_llamaproxy_direct"):
        del WebRequest._llamaproxy_direct


async def daphnes_scope(**kwargs) -> dict:
    """The scope daphne's own path makes of the same request."""
    server = Server()
    request, _ = web_request(server, **kwargs)
    original = getattr(WebRequest, "_llamaproxy_direct", WebRequest.process)
    original(request)
    return server.created[0]


async def test_a_request_on_a_route_gets_daphnes_scope_and_its_body(lane) -> None:
    server = Server()
    request, _ = web_request(server, uri=ROUTE + b"?trace=1")
    assert request.process() is None
    task = server.connections[request]["application_instance"]
    await task
    ((scope, body, send),) = lane
    assert scope == await daphnes_scope(uri=ROUTE + b"?trace=1")
    assert scope["headers"][2] == (b"authorization", b"Bearer sk-1") and scope["query_string"] == b"trace=1"
    assert body == BODY and type(send) is DirectSend and send.request is request
    assert server.created == []  # no ASGI application instance was made
    assert request.client_addr == ["127.0.0.1", 40000]  # what daphne's access log line names


@pytest.mark.parametrize(
    "case",
    [
        {"uri": b"/v1/models"},  # not a route
        {"method": b"GET"},
        {"headers": [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]},
        {"headers": [(b"Daphne-Root-Path", b"/llm")]},
        {"headers": [(b"X-Note", b"a\x0bb")]},  # daphne answers 400 for it
        {"uri": ROUTE + b"?q=\xff"},
        {"body": b"x" * 1025},  # over the in-memory limit: Django spools it
        {"peer": UNIXAddress(b"/tmp/sock")},
    ],
)
async def test_anything_out_of_the_plain_case_goes_daphnes_own_way(lane, case) -> None:
    server = Server()
    request, transport = web_request(server, **case)
    request.process()
    await asyncio.sleep(0)
    assert lane == []
    assert server.created or transport.sends  # an application instance, or daphne's own 400
    assert "application_instance" not in server.connections[request]


async def test_an_upload_gets_the_file_twisted_received_it_into_whatever_its_size(lane) -> None:
    server = Server()
    upload = b"\x00GGUF" * 100_000  # far over max_body
    request, _ = web_request(server, uri=UPLOADS + b"sha256:ab", body=upload)
    assert request.process() is None
    await server.connections[request]["application_instance"]
    ((scope, body, _send),) = lane
    assert body is request.content and body.read() == upload  # the file itself, from its start
    assert scope["path"] == "/api/blobs/sha256:ab"
    assert server.created == []


@pytest.mark.parametrize("uri", [b"/api/blobs/sha256%3Aab", b"/api/blob", b"/v1/api/blobs/x"])
async def test_paths_outside_the_upload_prefixes_go_daphnes_own_way(lane, uri: bytes) -> None:
    server = Server()
    request, _ = web_request(server, uri=uri, body=b"x" * 2000)
    request.process()
    await asyncio.sleep(0)
    assert lane == [] and server.created


async def test_a_request_the_lane_cannot_read_goes_daphnes_own_way(lane) -> None:
    server = Server()
    request, transport = web_request(server)
    request.content.close()  # daphne meets the same failure and answers 500 for it
    request.process()
    assert lane == [] and b"500 Internal Server Error" in b"".join(transport.sends)


async def test_proxy_headers_configured_go_daphnes_own_way(lane) -> None:
    server = Server(proxy_header="X-Forwarded-For")
    request, _ = web_request(server)
    request.process()
    assert lane == [] and len(server.created) == 1


async def taken(server: Server, lane: list) -> tuple[WebRequest, Transport, DirectSend]:
    """A request the lane took, once its handler ran: the request, its transport, its `send`."""
    request, transport = web_request(server)
    request.process()
    await server.connections[request]["application_instance"]
    return request, transport, lane[-1][2]


async def test_the_direct_send_is_daphnes_reply_and_the_hooks_know_it(lane) -> None:
    server = Server()
    request, transport, send = await taken(server, lane)
    lost: list[bool] = []
    assert on_connection_lost(send, lambda: lost.append(True)) is True
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    writer = body_writer(send)
    assert writer is not None
    writer.write(b"data: 1\n\n")
    await send({"type": "http.response.body"})
    sent = b"".join(transport.sends)
    assert sent.startswith(b"HTTP/1.1 200 OK\r\n") and b"Server: daphne" in sent
    assert sent.endswith(b"\r\n\r\n9\r\ndata: 1\n\n\r\n0\r\n\r\n")
    assert server.logged[0]["path"] == "/v1/completions" and server.logged[0]["status"] == 200
    assert server.connections[request]["disconnected"] and lost == []
    assert abort(send) is True and not transport.aborted  # finished: nothing to drop


async def test_a_direct_request_can_be_dropped_mid_response(lane) -> None:
    _, transport, send = await taken(Server(), lane)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    assert abort(send) is True and transport.aborted


def test_a_connection_is_asked_for_its_local_address_once(monkeypatch) -> None:
    from twisted.internet import tcp

    asked = []
    monkeypatch.setattr(tcp.Server, "getHost", lambda self: asked.append(1) or IPv4Address("TCP", "h", 1))
    daphne_tuning._host_per_connection()
    one, two = object.__new__(tcp.Server), object.__new__(tcp.Server)
    assert one.getHost() is one.getHost() and two.getHost().port == 1
    assert len(asked) == 2
