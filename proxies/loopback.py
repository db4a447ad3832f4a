"""A lean HTTP/1.1 client for the relay's requests to the runners (llama-server on 127.0.0.1).

httpx's default stack (client layers, httpcore, anyio) spends about 0.5 ms of CPU per request,
and h11's general machinery (event objects, state checks, a regex per line and chunk) most of
what was left, all taken on a small machine straight from llama-server's generation. This
client keeps httpx's Response type and exceptions but does the rest itself: the request written
in one send, the response head and body framing (Content-Length, chunked, until close) parsed
here, asyncio protocols, and pooled keep-alive connections.

A reused keep-alive connection that the runner closed before answering (llama-server does this)
is retried once on a fresh connection; nothing of the response had arrived, so this is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx

CONNECT_TIMEOUT = 10.0
MAX_IDLE_PER_HOST = 64
MAX_HEAD = 65536


class ProtocolError(Exception):
    """The runner's HTTP was malformed, or ended early."""


class _RunnerProtocol(asyncio.Protocol):
    """One connection to a runner. Bytes wait in a buffer for `read()`, except while a `sink` is
    set: then each arrival is handed to it at once, in the event loop's own callback (a streamed
    response relayed without waking a task per token)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.sink: Callable[[bytes], None] | None = None
        self.on_close: Callable[[], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        sink = self.sink
        if sink is not None:
            sink(data)
            return
        self._buffer.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self._closed()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()

    def _closed(self) -> None:
        self.eof = True
        self._wake()
        if self.on_close is not None:
            self.on_close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def has_data(self) -> bool:
        return bool(self._buffer)

    def take_buffered(self) -> bytes:
        data = b"".join(self._buffer)
        self._buffer.clear()
        return data

    async def read(self) -> bytes:
        """What has arrived (waiting for something), or b"" once the runner closed."""
        while not self._buffer:
            if self.eof:
                return b""
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take_buffered()


@dataclass
class Head:
    status: int
    reason: bytes
    headers: list[tuple[bytes, bytes]]  # names lower-cased, values stripped
    version: bytes


def parse_head(data: bytes) -> Head:
    """A response's status line and header lines (without the blank line that ends them)."""
    lines = data.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or len(parts[1]) != 3 or not parts[1].isdigit():
        raise ProtocolError(f"bad status line {lines[0][:60]!r}")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or name[-1:] in (b" ", b"\t") or line[:1] in (b" ", b"\t"):
            raise ProtocolError(f"bad header line {line[:60]!r}")
        headers.append((name.lower(), value.strip(b" \t")))
    return Head(int(parts[1]), parts[2] if len(parts) == 3 else b"", headers, parts[0][5:])


def request_bytes(
    method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes | None
) -> bytes:
    """The request as it goes on the wire. A header that could not be written faithfully (a line
    break or a colon where none may be) is left out rather than let it split the request."""
    if not target or b" " in target or b"\r" in target or b"\n" in target:
        raise httpx.LocalProtocolError(f"bad request target {target[:60]!r}")
    lines = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if b":" in name or b"\r" in name + value or b"\n" in name + value or not name or b" " in name:
            continue
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    if body:
        lines.append(body)
    return b"".join(lines)


class _Connection:
    def __init__(self, protocol: _RunnerProtocol) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.pending = b""  # received and not yet consumed
        self.keep_alive = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()

    @property
    def usable(self) -> bool:
        """Open, and nothing arrived unasked (bytes on an idle connection would be read as the
        next answer's head)."""
        return not self.protocol.eof and not self.transport.is_closing() and not self.protocol.has_data

    async def read_head(self) -> Head:
        """The next final response head (1xx interim answers skipped); ConnectionResetError when
        the runner closed before sending a byte of it."""
        buffer = self.pending
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = parse_head(buffer[:end])
                buffer = buffer[end + 4 :]
                if 100 <= head.status < 200:
                    continue
                self.pending = buffer
                return head
            if len(buffer) > MAX_HEAD:
                raise ProtocolError("response head too long")
            data = await self.protocol.read()
            if not data:
                if buffer:
                    raise ProtocolError("the runner closed the connection mid-head")
                raise ConnectionResetError("closed before answering")
            buffer += data

    def take_pending(self) -> bytes:
        data, self.pending = self.pending, b""
        return data


class ChunkedDecoder:
    """`Transfer-Encoding: chunked` decoding for the relay's hot path (streamed completions).

    `feed` returns every payload byte that is complete so far, joined; `done` once the last chunk
    and its (ignored) trailers have been read. Malformed framing raises ProtocolError.
    """

    MAX_LINE = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # payload bytes still due in the current chunk
        self._crlf = False  # the CRLF after a chunk's payload is due
        self.done = False
        self._trailers = False

    def whole_chunk(self, data: bytes) -> int:
        """Where the payload starts when `data` is exactly one complete chunk (not the last) and
        nothing is pending, as a streamed token usually arrives: the payload is then
        `data[start:-2]`. 0 otherwise, and `feed` takes `data`."""
        if self._buffer or self._left or self._crlf or self._trailers:
            return 0
        line_end = data.find(b"\r\n", 0, 18)
        if line_end <= 0 or not data.endswith(b"\r\n"):
            return 0
        try:
            size = int(data[:line_end], 16)
        except ValueError:
            return 0
        # isalnum: int() also takes signs, "_" and spaces, which no chunk size has
        if size <= 0 or line_end + size + 4 != len(data) or not data[:line_end].isalnum():
            return 0
        return line_end + 2

    def feed(self, data: bytes) -> bytes:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        at = 0
        end = len(buffer)
        while at < end and not self.done:
            if self._left:
                take = min(self._left, end - at)
                out.append(buffer[at : at + take])
                at += take
                self._left -= take
                if self._left:
                    break
                self._crlf = True
            elif self._crlf:
                if end - at < 2:
                    break
                if buffer[at : at + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                at += 2
                self._crlf = False
            else:
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    if end - at > self.MAX_LINE:
                        raise ProtocolError("chunk header too long")
                    break
                line = buffer[at:line_end]
                at = line_end + 2
                if self._trailers:
                    self.done = not line  # trailer lines end with an empty one
                    continue
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise ProtocolError("negative chunk size")
                if size == 0:
                    self._trailers = True
                else:
                    self._left = size
        self._buffer = buffer[at:]
        if self.done and self._buffer:
            raise ProtocolError("data after the end of a chunked body")
        return b"".join(out)


class RunnerBody(httpx.AsyncByteStream):
    """The response body; returns the connection to the pool once fully read, else closes it
    (closing is how a client's disconnect reaches the runner and stops its generation).
    `length`: the Content-Length, or None for a chunked body, or -1 for one that ends at close."""

    content_type = ""  # the response's Content-Type, as sent (read off the head by send_raw)
    encoded = False  # whether it has a Content-Encoding

    def __init__(
        self, transport: LoopbackTransport, key: tuple[str, int], conn: _Connection, length: int | None
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Connection | None = conn
        self._length = length

    @property
    def chunked(self) -> bool:
        return self._length is None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            if self._length is None:
                body = self._chunked_body(conn)
            elif self._length < 0:
                body = self._body_until_close(conn)
            else:
                body = self._sized_body(conn, self._length)
            async for data in body:
                yield data
        except ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        self._release(complete=True)

    async def _sized_body(self, conn: _Connection, length: int) -> AsyncIterator[bytes]:
        left = length
        data = conn.take_pending()
        while True:
            if len(data) > left:
                raise ProtocolError("more data than the Content-Length")
            if data:
                left -= len(data)
                yield data
            if not left:
                return
            data = await conn.protocol.read()
            if not data:
                raise ProtocolError("the runner closed the connection mid-response")

    async def _body_until_close(self, conn: _Connection) -> AsyncIterator[bytes]:
        conn.keep_alive = False
        data = conn.take_pending()
        while True:
            if data:
                yield data
            data = await conn.protocol.read()
            if not data:
                return

    async def _chunked_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        decoder = ChunkedDecoder()
        received = conn.take_pending()
        while True:
            data = decoder.feed(received)
            if data:
                yield data
            if decoder.done:
                return
            received = await conn.protocol.read()
            if not received:
                raise ProtocolError("the runner closed the connection mid-response")

    async def read(self) -> bytes:
        """The whole body, as it came (httpx's `aread` less its decoding layers)."""
        conn = self._conn
        if conn is not None and self._length is not None and 0 <= self._length == len(conn.pending):
            body = conn.take_pending()  # a small answer arrives with its head, whole
            self._release(complete=True)
            return body
        return b"".join([data async for data in self])

    async def pump(
        self, on_data: Callable[[bytes], None], on_chunk: Callable[[bytes, int], None] | None = None
    ) -> None:
        """Hand the body to `on_data` as it arrives, called from the connection's own receive
        callback (no task wakes per chunk: the relay's path for streamed completions).
        With `on_chunk`, an arrival that is exactly one whole chunk (the usual one: a token) goes
        to it instead, framing and all, with where its payload starts (see `whole_chunk`).
        Returns once the body is complete; raises as iterating would."""
        conn = self._conn
        if conn is None:
            return
        if not self.chunked:
            async for data in self:
                on_data(data)
            return
        protocol = conn.protocol
        decoder = ChunkedDecoder()
        finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def feed(received: bytes) -> None:
            if finished.done():
                return
            try:
                start = decoder.whole_chunk(received)
                if start:  # the usual arrival: one whole chunk, the body not done
                    if on_chunk is not None:
                        on_chunk(received, start)
                    else:
                        on_data(received[start:-2])
                    return
                data = decoder.feed(received)
                if data:
                    on_data(data)
            except Exception as exc:  # bad framing, or the consumer failed: end the pump with it
                finished.set_exception(exc)
                return
            if decoder.done:
                finished.set_result(None)

        def closed() -> None:
            if not finished.done():
                finished.set_exception(ProtocolError("the runner closed the connection mid-response"))

        try:
            feed(conn.take_pending() + protocol.take_buffered())
            if protocol.eof:
                closed()
            else:
                protocol.sink, protocol.on_close = feed, closed
            await finished
        except ProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            protocol.sink = protocol.on_close = None
        self._release(complete=True)

    def _release(self, complete: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if complete and conn.keep_alive and not conn.pending:
            self._transport.put_idle(self._key, conn)
        else:
            conn.close()

    async def aclose(self) -> None:
        self._release()


class LoopbackTransport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def put_idle(self, key: tuple[str, int], conn: _Connection) -> None:
        pool = self._idle.setdefault(key, [])
        if len(pool) < MAX_IDLE_PER_HOST and conn.usable:
            pool.append(conn)
        else:
            conn.close()

    def _take_idle(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        while pool:
            conn = pool.pop()
            if conn.usable:
                return conn
            conn.close()
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        try:
            loop = asyncio.get_running_loop()
            _, protocol = await asyncio.wait_for(
                loop.create_connection(_RunnerProtocol, host, port), CONNECT_TIMEOUT
            )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from exc
        return _Connection(protocol)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        headers = [(k, v) for k, v in request.headers.raw if k.lower() != b"connection"]
        return await self.send_raw(
            request.url.host,
            request.url.port or 80,
            request.method.encode(),
            request.url.raw_path,
            headers,
            request.content,
            request=request,
        )

    async def send_raw(
        self,
        host: str,
        port: int,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes | None,
        request: httpx.Request | None = None,
    ) -> httpx.Response:
        """The relay's path: no httpx.Request to build (its URL and header models cost more than
        the rest of the request). `headers` must carry Host, and Content-Length with a body."""
        key = (host, port)
        data = request_bytes(method, target, headers, body)
        conn = self._take_idle(key)
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                conn = await self._connect(host, port)
            try:
                conn.transport.write(data)
                head = await conn.read_head()
            except (OSError, ProtocolError) as exc:
                conn.close()
                if reused and attempt == 1 and isinstance(exc, ConnectionResetError):
                    conn, reused = None, False  # the runner dropped an idle connection: once more, fresh
                    continue
                raise httpx.RemoteProtocolError(f"the runner did not answer: {exc}") from exc
            except BaseException:
                # Cancelled while the runner works on it (the client went away): closing the
                # connection is how llama-server learns to stop.
                conn.close()
                raise
            break
        length: int | None = -1
        content_type, encoded = b"", False
        conn.keep_alive = head.version == b"1.1"
        for name, value in head.headers:
            if name == b"content-type":
                content_type = content_type + b", " + value if content_type else value  # as httpx joins them
            elif name == b"content-encoding":
                encoded = True
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked":
                    length = None
            elif name == b"content-length" and length == -1:
                if not value.isdigit():
                    conn.close()
                    raise httpx.RemoteProtocolError(f"bad Content-Length {value[:20]!r}")
                length = int(value)
            elif name == b"connection" and b"close" in value.lower():
                conn.keep_alive = False
        if method == b"HEAD" or head.status in (204, 304):
            length = 0  # no body whatever the headers say
        body = RunnerBody(self, key, conn, length)
        body.content_type, body.encoded = content_type.decode("latin-1"), encoded
        return httpx.Response(
            head.status,
            headers=head.headers,
            stream=body,
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
