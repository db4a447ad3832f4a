"""Changes to daphne's Twisted underpinnings for the gateway process. `install()` puts in the
first, the third and the fourth; the second is a helper the API faces' handler calls per
response, as is `on_connection_lost` at the end.

1. Eager socket writes for daphne's TCP connections.

Twisted buffers every `transport.write()` and sends it on a later turn of the event loop: it
registers the socket for writability (an `epoll_ctl`), sends when the loop sees it writable, and
unregisters it (another `epoll_ctl`) once the buffer is empty. A streamed completion writes one
small chunk per token, so that is two extra system calls and an extra loop turn per token, on
the same cores that generate the tokens.

Installed in the gateway process only, this sends at once when nothing is buffered (what asyncio's
own transports do) and leaves everything else — a partial send, a full socket buffer, a connection
being closed, flow control — to Twisted's normal path, which still owns whatever was not sent.
Measured with `bench/bench_gateway.py`: about a fifth less gateway CPU per streamed token.

2. Body bytes written straight to daphne's request (`body_writer`): a relayed stream's chunks
skip the ASGI message per chunk (a dict, daphne's connection checks, its reply dispatch and
logging) and go out as HTTP chunks from the runner connection's receive callback; a runner's
chunk goes out with its own framing, neither decoded nor encoded again.

3. No form parsing in Twisted. twisted.web parses every POST body's Content-Type with the email
package, and a multipart body (an audio upload) with it in full, to fill `request.args`, which
daphne never reads: it hands the raw body to Django. Twisted's own switch for that is off here.

4. A response's head goes out in the same send as its first body bytes (see `_head_with_body`),
and whether a connection is TLS is worked out once per connection (`_secure_per_connection`);
Twisted's own access log line, discarded at daphne's usual verbosity, is not made
(`_no_discarded_access_log`); daphne's requests hash in C (`_identity_hash`) and it reaches
Twisted's HTTP module without the deprecation proxy around it (`_http_module_itself`); a
connection's local address is asked of the socket once, not for every request on it
(`_host_per_connection`).

5. The direct lane (`direct_lane`, installed by asgi.py for the relay's busiest routes): a
request daphne would hand to an ASGI application instance goes straight to the API faces'
handler, with the same scope and with daphne's own reply handling, but without the instance's
machinery (a Deferred chain, an input queue, the body as a queued message, and a coroutine hop
per reply message): about a fifth of the gateway's CPU per short request.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Collection, Iterable
from typing import Any, NamedTuple

from twisted.internet import abstract, tcp

_INSTALLED = "_llamaproxy_eager_write"


def eager_write(transport: abstract.FileDescriptor, data: bytes) -> None:
    # On a streamed completion this runs once per token, each time on a cold CPU cache (the
    # cores were generating meanwhile), so the socket is written here directly rather than
    # through `writeSomeData` and `untilConcludes` (Python retries EINTR by itself).
    if (  # connected, not closing, and nothing waiting in either of Twisted's two buffers
        data
        and type(data) is bytes
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset >= len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:  # would block, or the connection is gone: Twisted's path finds out the same
            sent = 0
        if sent >= len(data):
            return
        if sent:
            data = data[sent:]
    abstract.FileDescriptor.write(transport, data)


def eager_write_sequence(transport: abstract.FileDescriptor, iovec: Iterable[bytes]) -> None:
    parts = list(iovec)
    if set(map(type, parts)) <= {bytes}:  # a response head is a couple of dozen parts: C-speed check
        eager_write(transport, b"".join(parts))
    else:
        abstract.FileDescriptor.writeSequence(transport, parts)


def install() -> bool:
    """Patch tcp.Connection and daphne's request class (once); True when this call installed them."""
    if getattr(tcp.Connection, _INSTALLED, False):
        return False
    tcp.Connection.write = eager_write  # type: ignore[method-assign]
    tcp.Connection.writeSequence = eager_write_sequence  # type: ignore[method-assign]
    setattr(tcp.Connection, _INSTALLED, True)
    _no_form_parsing()
    _head_with_body()
    _secure_per_connection()
    _no_discarded_access_log()
    _identity_hash()
    _http_module_itself()
    _host_per_connection()
    return True


def _host_per_connection() -> None:
    """Twisted asks the socket for its local address (a `getsockname` system call) for every
    request; a connection's local address does not change."""
    original = tcp.Server.getHost

    def getHost(self: Any) -> Any:
        host = self.__dict__.get("_llamaproxy_host")
        if host is None:
            host = self._llamaproxy_host = original(self)
        return host

    tcp.Server.getHost = getHost  # type: ignore[method-assign]


def _http_module_itself() -> None:
    """Twisted wraps `twisted.web.http` in a proxy that warns of its deprecated names, so each
    `http.Request.write(...)`-style call in daphne runs four Python calls to look the name up.
    daphne uses no deprecated name: its `http` is the module itself."""
    from daphne import http_protocol
    from twisted.python import deprecate

    if isinstance(http_protocol.http, deprecate._ModuleProxy):
        http_protocol.http = object.__getattribute__(http_protocol.http, "_module")


def _identity_hash() -> None:
    """daphne keys its connections by request with a Python `__hash__` (of `id(self)`) that runs
    a dozen times per request; object's own hash is identity-based too, and in C."""
    from daphne.http_protocol import WebRequest

    WebRequest.__hash__ = object.__hash__  # type: ignore[method-assign, assignment]


def _no_discarded_access_log() -> None:
    """Twisted's HTTP factory formats a combined-log line for every request and emits it as a
    log event. At daphne's verbosity 0 and 1 Twisted's log goes nowhere (daphne writes its own
    access log), so the line is not made at all there."""
    from daphne.http_protocol import HTTPFactory

    original = HTTPFactory.startFactory

    def startFactory(self: Any) -> None:
        original(self)
        if self.server.verbosity <= 1:
            self._logFile = None

    HTTPFactory.startFactory = startFactory  # type: ignore[method-assign]


def _secure_per_connection() -> None:
    """daphne asks every request whether its connection is TLS, which Twisted answers with a
    zope interface adaptation of the transport (about 5% of the gateway's CPU per request in
    profiles). A connection's transport does not change, so the answer is kept on it."""
    from twisted.web import http

    original = http.HTTPChannel.isSecure

    def isSecure(self: Any) -> bool:
        transport = self.transport
        known = self.__dict__.get("_llamaproxy_secure")
        if known is not None and known[0] is transport:
            return known[1]
        secure = original(self)
        self._llamaproxy_secure = (transport, secure)
        return secure

    http.HTTPChannel.isSecure = isSecure  # type: ignore[method-assign]


class _Collector:
    """Stands in for a channel's transport while a response's first write is put together."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.parts.extend(iovec)


def _head_with_body() -> None:
    """A response's head and its first body bytes in one send: Twisted writes the head on its
    own, so a whole answer cost two sends (and the client two wake-ups)."""
    from twisted.web import http

    original = http.Request.write

    def write(self: Any, data: bytes) -> None:
        channel = self.channel
        if self.startedWriting or not data or channel is None or self._disconnected:
            original(self, data)
            return
        transport, collector = channel.transport, _Collector()
        channel.transport = collector
        try:
            original(self, data)
        finally:
            channel.transport = transport
            if collector.parts:
                transport.writeSequence(collector.parts)

    http.Request.write = write  # type: ignore[method-assign]


def _no_form_parsing() -> None:
    from daphne.http_protocol import WebRequest

    original = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__  # type: ignore[method-assign]


class DirectSend:
    """The ASGI `send` of a request the direct lane took: each message goes to daphne's own
    reply handling of the request (status, headers, body, finish, access log), as daphne's
    server does for an application instance, less the hop through a coroutine of its own."""

    __slots__ = ("request",)

    def __init__(self, request: Any) -> None:
        self.request = request

    async def __call__(self, message: dict) -> None:
        self.request.handle_reply(message)  # it ignores a request that is finished or gone


DirectHandler = Callable[[dict, Any, DirectSend], Awaitable[None]]  # body: bytes, or a file (file_routes)


def direct_lane(
    routes: Collection[tuple[int, bytes]],
    handle: DirectHandler,
    max_body: int,
    file_routes: Collection[tuple[int, bytes]] = (),
) -> None:
    """Hand daphne's POST requests for `routes` (local port, path) to `handle(scope, body, send)`,
    run as the request's application instance, instead of going through ASGI's machinery.

    Requests whose path starts with one of `file_routes` (local port, path prefix; uploads of
    any size) are handed over with `body` the file Twisted received the body into, whatever its
    size: daphne would queue the whole body in memory as ASGI messages first.

    Only the plain case is taken: a request with anything daphne treats specially (an upgrade,
    a root path header, an invalid header value, proxy headers configured, a query string that
    is not ASCII, a body over `max_body` bytes, a connection that is not TCP) goes daphne's own
    way, which stays the reference for all of it. (Header names need no check here: Twisted
    answers 400 for one that is not a token before daphne sees the request.)"""
    from daphne.http_protocol import WebRequest
    from daphne.utils import INVALID_HEADER_VALUE_BYTES

    if getattr(WebRequest, "_llamaproxy_direct", None) is not None:
        WebRequest.process = WebRequest._llamaproxy_direct  # type: ignore[method-assign]
    original = WebRequest.process
    routes = frozenset(routes)
    special = (b"upgrade", b"daphne-root-path")
    loops: list[asyncio.AbstractEventLoop] = []

    def scope_of(request: Any) -> dict | None:
        """The HTTP scope daphne would make for `request`, or None when daphne must see it."""
        server, client, host = request.server, request.client, request.host
        if server.proxy_forwarded_address_header or not hasattr(client, "port") or not hasattr(host, "port"):
            return None
        headers = []
        for name, values in request.requestHeaders.getAllRawHeaders():
            lowered = name.lower()
            if lowered in special:
                return None
            for value in values:
                if INVALID_HEADER_VALUE_BYTES.intersection(value):
                    return None
                if b"_" not in name:  # as daphne: CVE-2015-0219
                    headers.append((lowered, value))
        query = b""
        if b"?" in request.uri:
            query = request.uri.split(b"?", 1)[1]
            if not query.isascii():
                return None
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": request.clientproto.split(b"/")[-1].decode("ascii"),
            "method": "POST",
            "path": request.path.decode("ascii"),  # a route's path: nothing to unquote
            "raw_path": request.path,
            "root_path": server.root_path,
            "scheme": "https" if request.isSecure() else "http",
            "query_string": query,
            "headers": headers,
            "client": [str(client.host), client.port],
            "server": [str(host.host), host.port],
        }

    def as_file(request: Any) -> bool:
        port, path = request.host.port, request.path
        return b"%" not in path and any(port == p and path.startswith(prefix) for p, prefix in file_routes)

    def process(self: Any) -> Any:
        if self.method != b"POST":
            return original(self)
        whole = (self.host.port, self.path) in routes
        if not whole and not (file_routes and as_file(self)):
            return original(self)
        self.request_start = time.time()
        try:
            scope = scope_of(self)
            if scope is not None:
                content = self.content
                content.seek(0, 0)
                body = content.read(max_body + 1) if whole else content
        except Exception:  # whatever it was, daphne's own path meets it too and answers for it
            scope = None
        connection = self.server.connections.get(self)
        if scope is None or (whole and len(body) > max_body) or connection is None:
            return original(self)  # (not connected any more: daphne finds that out again)
        self.client_addr, self.server_addr = scope["client"], scope["server"]
        self.client_scheme, self.query_string = scope["scheme"], scope["query_string"]
        self.root_path, self.clean_headers = scope["root_path"], scope["headers"]
        if not loops:
            loops.append(asyncio.get_running_loop())
        # daphne's periodic check reaps it, reports what it raised, and shutdown cancels it.
        connection["application_instance"] = loops[0].create_task(handle(scope, body, DirectSend(self)))
        return None

    WebRequest._llamaproxy_direct = original  # type: ignore[attr-defined]
    WebRequest.process = process  # type: ignore[method-assign]


def _daphne_request(send: Any) -> Any:
    """The daphne request behind an ASGI `send` (its `Server.handle_reply` bound to it, or the
    direct lane's `DirectSend`), or None."""
    if type(send) is DirectSend:
        return send.request
    if not isinstance(send, functools.partial) or len(send.args) != 1:
        return None
    # Imported here, not at the top: importing daphne.server installs Twisted's reactor, which
    # only the gateway process may do (this module is imported wherever asgi.py is).
    from daphne.http_protocol import WebRequest
    from daphne.server import Server

    if getattr(send.func, "__func__", None) is not Server.handle_reply:
        return None
    request = send.args[0]
    return request if isinstance(request, WebRequest) else None


def abort(send: Any) -> bool:
    """Drop the client's connection mid-response (so a failed stream is not mistaken for a
    finished one, nor left hanging: daphne cannot report an error once the response started).
    False when `send` is not daphne's."""
    request = _daphne_request(send)
    if request is None:
        return False
    channel = getattr(request, "channel", None)  # Twisted deletes it once the request finished
    if not request._disconnected and channel is not None:
        channel.transport.abortConnection()
    return True


def on_connection_lost(send: Any, callback: Callable[[], object]) -> bool | None:
    """For daphne's ASGI `send`: have `callback` called (once, from the event loop) if the client's
    connection is lost before the response has finished. None for any other server; False when
    the connection is gone already (and `callback` will not be called).

    What daphne's `http.disconnect` message says too, without a task waiting on `receive` for it
    (daphne also sends that message after every finished response)."""
    request = _daphne_request(send)
    if request is None:
        return None
    if request._disconnected:
        return False
    request.notifyFinish().addErrback(lambda failure: callback())
    return True


class BodyWriter(NamedTuple):
    """Writers of response body bytes straight to a daphne request (see `body_writer`)."""

    write: Callable[[bytes], None]
    write_chunk: Callable[[bytes, int], bool]


def body_writer(send: Any) -> BodyWriter | None:
    """For daphne's ASGI `send` (its `Server.handle_reply` bound to the request), functions that
    write response body bytes to that request at once, as `send` would with `more_body`;
    None for any other server. The response must have been started through `send`, and is
    finished through it too (the final empty body message).

    - `write(data)` sends `data` as body bytes.
    - `write_chunk(chunk, size)` sends `chunk`, one whole HTTP/1.1 chunk (its size line, `size`
      payload bytes, CRLF) as it is, once the response is under way in chunked encoding: a
      runner's chunk goes on unchanged, with no decoding and encoding again. False when the
      response is not that (not started yet, HTTP/1.0, HEAD): the caller writes the payload."""
    request = _daphne_request(send)
    if request is None:
        return None

    def write(data: bytes) -> None:
        if request._disconnected or request.finished or not data:
            return  # the client is gone: daphne reports that to the application on its own
        if request.startedWriting and request.chunked:
            request.sentLength += len(data)
            request.channel.transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:  # the first write sends the headers; HTTP/1.0 and HEAD take Twisted's own path
            request.write(data)

    def write_chunk(chunk: bytes, size: int) -> bool:
        if request._disconnected or request.finished:
            return True  # the client is gone: nothing to send
        if request.startedWriting and request.chunked:
            request.sentLength += size
            request.channel.transport.write(chunk)
            return True
        return False

    return BodyWriter(write, write_chunk)
