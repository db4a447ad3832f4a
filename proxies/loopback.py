"""A lean HTTP/1.1 transport for the relay's requests to the runners.

httpx's default stack (client layers, httpcore, anyio) spends about 0.5 ms of CPU per request,
which on a small machine is taken straight from llama-server's generation. This transport keeps
httpx's Request/Response types and exceptions but does the I/O itself: h11 for the protocol,
asyncio streams, pooled keep-alive connections, and the whole request written in one send.

A reused keep-alive connection that the runner closed before answering (llama-server does this)
is retried once on a fresh connection; nothing of the response had arrived, so this is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import h11
import httpx

CONNECT_TIMEOUT = 10.0
MAX_IDLE_PER_HOST = 64


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

    @property
    def at_eof(self) -> bool:
        return self.eof and not self._buffer


class _Connection:
    def __init__(self, protocol: _RunnerProtocol) -> None:
        self.protocol = protocol
        self.transport = protocol.transport
        self.h11 = h11.Connection(h11.CLIENT)
        self.body_done = False  # the response body was decoded outside h11 (chunked)
        self.keep_alive = True

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()

    @property
    def usable(self) -> bool:
        return not self.protocol.eof and not self.transport.is_closing()

    @property
    def reusable(self) -> bool:
        return self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE

    async def next_event(self) -> h11.Event | type[h11.NEED_DATA]:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            data = await self.protocol.read()
            self.h11.receive_data(data)  # b"" means the peer closed: h11 turns it into an error or end


class ChunkedDecoder:
    """`Transfer-Encoding: chunked` decoding for the relay's hot path (streamed completions).

    h11's general machinery (an event object, state checks and a regex per chunk) was about a
    quarter of the gateway's CPU per streamed token; this does only what a response body needs.
    `feed` returns every payload byte that is complete so far, joined; `done` once the last chunk
    and its (ignored) trailers have been read. Malformed framing raises h11.RemoteProtocolError.
    """

    MAX_LINE = 4096

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # payload bytes still due in the current chunk
        self._crlf = False  # the CRLF after a chunk's payload is due
        self.done = False
        self._trailers = False

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
                    raise h11.RemoteProtocolError("chunk not followed by CRLF")
                at += 2
                self._crlf = False
            else:
                line_end = buffer.find(b"\r\n", at)
                if line_end < 0:
                    if end - at > self.MAX_LINE:
                        raise h11.RemoteProtocolError("chunk header too long")
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
                    raise h11.RemoteProtocolError(f"bad chunk size {size_text[:20]!r}") from None
                if size < 0:
                    raise h11.RemoteProtocolError("negative chunk size")
                if size == 0:
                    self._trailers = True
                else:
                    self._left = size
        self._buffer = buffer[at:]
        if self.done and self._buffer:
            raise h11.RemoteProtocolError("data after the end of a chunked body")
        return b"".join(out)


class RunnerBody(httpx.AsyncByteStream):
    """The response body; returns the connection to the pool once fully read, else closes it
    (closing is how a client's disconnect reaches the runner and stops its generation)."""

    def __init__(
        self, transport: LoopbackTransport, key: tuple[str, int], conn: _Connection, chunked: bool = False
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: _Connection | None = conn
        self._chunked = chunked

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        try:
            if self._chunked:
                async for data in self._chunked_body(conn):
                    yield data
            else:
                async for data in self._h11_body(conn):
                    yield data
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc
        self._release()

    async def pump(self, on_data: Callable[[bytes], None]) -> None:
        """Hand the body to `on_data` as it arrives, called from the connection's own receive
        callback (no task wakes per chunk: the relay's path for streamed completions).
        Returns once the body is complete; raises as iterating would."""
        conn = self._conn
        if conn is None:
            return
        if not self._chunked:
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
                finished.set_exception(
                    h11.RemoteProtocolError("the runner closed the connection mid-response")
                )

        pending, was_closed = conn.h11.trailing_data
        try:
            feed(bytes(pending) + protocol.take_buffered())
            if was_closed or protocol.eof:
                closed()
            else:
                protocol.sink, protocol.on_close = feed, closed
            await finished
        except h11.RemoteProtocolError as exc:
            raise httpx.RemoteProtocolError(str(exc)) from exc
        finally:
            protocol.sink = protocol.on_close = None
        conn.body_done = True
        self._release()

    async def _chunked_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        """Chunked bodies (streams) decoded here; h11 is handed a fresh cycle afterwards."""
        decoder = ChunkedDecoder()
        pending, closed = conn.h11.trailing_data
        data = decoder.feed(bytes(pending))
        if data:
            yield data
        while not decoder.done:
            if closed:
                raise h11.RemoteProtocolError("the runner closed the connection mid-response")
            received = await conn.protocol.read()
            if not received:
                raise h11.RemoteProtocolError("the runner closed the connection mid-response")
            data = decoder.feed(received)
            if data:
                yield data
        conn.body_done = True

    async def _h11_body(self, conn: _Connection) -> AsyncIterator[bytes]:
        while True:
            event = await conn.next_event()
            if isinstance(event, h11.EndOfMessage):
                break
            if isinstance(event, h11.ConnectionClosed):
                raise httpx.RemoteProtocolError("the runner closed the connection mid-response")
            if not isinstance(event, h11.Data):
                continue
            # Everything already received goes out as one chunk: under load several tokens
            # arrive in one read, and one write downstream costs less than one each.
            parts = [bytes(event.data)]
            finished = False
            while True:
                event = conn.h11.next_event()
                if isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    finished = True
                    break
                else:  # NEED_DATA, or a close that the next round reports again and raises on
                    break
            yield b"".join(parts)
            if finished:
                break

    def _release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if conn.body_done:
            # Decoded here: h11 still thinks the body is coming. The response was complete and
            # keep-alive; a fresh protocol state serves the next request.
            if conn.h11.our_state is h11.DONE and conn.keep_alive:
                conn.h11 = h11.Connection(h11.CLIENT)
                conn.body_done = False
                self._transport.put_idle(self._key, conn)
            else:
                conn.close()
        elif conn.reusable:
            conn.h11.start_next_cycle()
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
        event = h11.Request(method=method, target=target, headers=headers)
        conn = self._take_idle(key)
        reused = conn is not None
        for attempt in (1, 2):
            if conn is None:
                conn = await self._connect(host, port)
            try:
                data = conn.h11.send(event) or b""
                if body:
                    data += conn.h11.send(h11.Data(data=body)) or b""
                data += conn.h11.send(h11.EndOfMessage()) or b""
                conn.transport.write(data)
                head = await conn.next_event()
                if isinstance(head, h11.ConnectionClosed):
                    raise ConnectionResetError("closed before answering")
                if not isinstance(head, h11.Response):
                    raise httpx.RemoteProtocolError(f"unexpected answer from the runner: {head!r}")
            except (OSError, h11.RemoteProtocolError, h11.LocalProtocolError) as exc:
                conn.close()
                if reused and attempt == 1:
                    conn, reused = None, False  # the runner dropped an idle connection: once more, fresh
                    continue
                raise httpx.RemoteProtocolError(f"the runner did not answer: {exc}") from exc
            break
        chunked = False
        conn.keep_alive = True
        for name, value in head.headers:
            if name == b"transfer-encoding":
                chunked = value.lower() == b"chunked"
            elif name == b"connection" and b"close" in value.lower():
                conn.keep_alive = False
        if head.http_version != b"1.1":
            conn.keep_alive = False
        if method == b"HEAD" or head.status_code in (204, 304):
            chunked = False  # no body whatever the headers say: h11 knows
        return httpx.Response(
            head.status_code,
            headers=head.headers,
            stream=RunnerBody(self, key, conn, chunked),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
        )

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for conn in pool:
                conn.close()
        self._idle.clear()
