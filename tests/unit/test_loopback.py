"""The relay's loopback transport against small asyncio HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from llamaproxy.ports import free_port
from proxies.loopback import LoopbackTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + (await reader.readexactly(length) if length else b"")


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    port = free_port()
    server = await asyncio.start_server(handler, "127.0.0.1", port)
    return server, f"http://127.0.0.1:{port}"


def reply(body: bytes, *, close: bool = False) -> bytes:
    connection = b"Connection: close\r\n" if close else b""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), connection, body)


async def test_a_request_is_written_in_one_piece_and_its_answer_read() -> None:
    writes: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writes.append(await reader.read(65536))
        writer.write(reply(b'{"ok": true}'))
        await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        request = httpx.Request(
            "POST", base + "/v1/x", content=b'{"a": 1}', headers={"content-type": "application/json"}
        )
        response = await transport.handle_async_request(request)
        assert response.status_code == 200
        assert await response.aread() == b'{"ok": true}'
        await transport.aclose()
    assert len(writes) == 1 and writes[0].endswith(b'{"a": 1}')  # headers and body in one send


@pytest.mark.parametrize(
    ("head", "content_type", "encoded"),
    [
        (b"Content-Type: application/json\r\n", "application/json", False),
        (b"Content-Type: text/plain\r\nContent-Type: charset=utf-8\r\n", "text/plain, charset=utf-8", False),
        (b"Content-Encoding: gzip\r\n", "", True),
    ],
)
async def test_the_body_knows_the_content_type_and_encoding_its_head_gave(
    head: bytes, content_type: str, encoded: bool
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n%sContent-Length: 2\r\n\r\nok" % head)
        await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        response = await transport.handle_async_request(httpx.Request("POST", base + "/x", content=b"{}"))
        assert (response.stream.content_type, response.stream.encoded) == (content_type, encoded)
        assert response.headers.get("content-type", "") == content_type  # what httpx says too
        await response.aclose()
        await transport.aclose()


@pytest.mark.parametrize("split", [False, True], ids=["body-with-head", "body-after-head"])
@pytest.mark.parametrize("whole", [False, True], ids=["iterated", "read-whole"])
async def test_a_keep_alive_connection_is_reused(split: bool, whole: bool) -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while not reader.at_eof():
            try:
                await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            answer = reply(b"hi")
            if split:  # a small answer usually comes whole with its head; not always
                head, _, answer = answer.partition(b"\r\n\r\n")
                writer.write(head + b"\r\n\r\n")
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(answer)
            await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        for _ in range(3):
            response = await transport.handle_async_request(httpx.Request("GET", base + "/health"))
            assert await (response.stream.read() if whole else response.aread()) == b"hi"
        await transport.aclose()
    assert connections == 1


async def test_an_idle_connection_the_server_closed_is_retried_once_on_a_fresh_one() -> None:
    answered = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        await read_request(reader)
        answered += 1
        if answered == 1:
            writer.write(reply(b"first"))  # keep-alive promised...
            await writer.drain()
            await read_request(reader)  # ...but the next request on it is dropped unanswered
            writer.close()
            return
        writer.write(reply(b"second"))
        await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        first = await transport.handle_async_request(httpx.Request("GET", base + "/a"))
        assert await first.aread() == b"first"
        second = await transport.handle_async_request(httpx.Request("GET", base + "/b"))
        assert await second.aread() == b"second"
        await transport.aclose()


async def test_a_chunked_stream_arrives_chunk_by_chunk_and_closing_early_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for index in range(1000):
                frame = b"data: %d\n\n" % index
                writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                await writer.drain()
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            pass
        finally:
            closed.set()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        response = await transport.handle_async_request(
            httpx.Request("POST", base + "/stream", content=b"{}")
        )
        chunks = []
        async for chunk in response.aiter_raw():
            chunks.append(chunk)
            if len(chunks) == 3:
                break
        await response.aclose()
        assert chunks[0].startswith(b"data: 0")
        await asyncio.wait_for(closed.wait(), 5)  # the server saw the client go away
        await transport.aclose()


async def test_a_refused_connection_is_an_httpx_connect_error() -> None:
    transport = LoopbackTransport()
    with pytest.raises(httpx.ConnectError):
        await transport.handle_async_request(httpx.Request("GET", f"http://127.0.0.1:{free_port()}/health"))


async def test_a_server_that_closes_without_answering_a_fresh_connection_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.close()

    server, base = await serve(handler)
    async with server:
        with pytest.raises(httpx.RemoteProtocolError):
            await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/x"))


async def test_chunks_that_arrive_together_are_passed_on_together_byte_for_byte() -> None:
    frames = [b"data: %d\n\n" % index for index in range(3)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(frame), frame) for frame in frames)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n")
        await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        response = await transport.handle_async_request(httpx.Request("GET", base + "/s"))
        chunks = [chunk async for chunk in response.aiter_raw()]
        await transport.aclose()
    assert b"".join(chunks) == b"".join(frames)
    assert len(chunks) == 1


@pytest.mark.parametrize(
    "answer, problem",
    [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "mid-response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "mid-response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntoo long", "more data than"),
    ],
    ids=["chunked-cut", "shorter-than-length", "longer-than-length"],
)
async def test_a_body_cut_short_or_overlong_is_an_error_not_a_hang(answer: bytes, problem: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
        writer.close()

    server, base = await serve(handler)
    async with server:
        response = await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/s"))
        with pytest.raises(httpx.RemoteProtocolError, match=problem):
            await asyncio.wait_for(response.aread(), 5)


# --- the chunked decoder of streamed bodies -----------------------------------------------------

CHUNKED = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n1\r\n!\r\n0\r\nX-Trailer: yes\r\n\r\n"


def test_the_chunked_decoder_reads_any_split_with_extensions_and_trailers() -> None:
    from proxies.loopback import ChunkedDecoder

    for size in (1, 2, 3, 7, len(CHUNKED)):
        decoder = ChunkedDecoder()
        out = b"".join(decoder.feed(CHUNKED[i : i + size]) for i in range(0, len(CHUNKED), size))
        assert out == b"hello, world!" and decoder.done, size


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"zz\r\nhello\r\n", "bad chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "not followed by CRLF"),
        (b"0\r\n\r\nextra", "after the end"),
        (b"f" * 5000, "too long"),
    ],
)
def test_the_chunked_decoder_refuses_bad_framing(data: bytes, problem: str) -> None:
    from proxies.loopback import ChunkedDecoder, ProtocolError

    with pytest.raises(ProtocolError, match=problem):
        ChunkedDecoder().feed(data)


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        (b"5\r\nhello\r\n", b"hello"),
        (b"1A\r\n" + b"x" * 26 + b"\r\n", b"x" * 26),
        (b"5;ext=1\r\nhello\r\n", None),  # an extension: left to feed
        (b"5\r\nhello\r\n0\r\n\r\n", None),  # more than one chunk
        (b"5\r\nhel", None),  # a part of one
        (b"0\r\n\r\n", None),  # the last chunk
        (b" 5\r\nhello\r\n", None),  # what int() would take but the framing does not
        (b"5_\r\nhello\r\n", None),
        (b"zz\r\nhello\r\n", None),  # a bad size: feed raises
        (b"5\r\nhelloXX", None),
    ],
)
def test_a_whole_chunk_is_recognised_only_when_it_is_exactly_one(data: bytes, payload: bytes | None) -> None:
    from proxies.loopback import ChunkedDecoder

    start = ChunkedDecoder().whole_chunk(data)
    assert (data[start:-2] if start else None) == payload


def test_no_whole_chunk_is_taken_while_the_decoder_is_inside_one() -> None:
    from proxies.loopback import ChunkedDecoder

    decoder = ChunkedDecoder()
    assert decoder.feed(b"a\r\nhel") == b"hel"
    # The rest of that 10-byte chunk happens to look like a whole chunk of its own.
    assert decoder.whole_chunk(b"2\r\nxy\r\n") == 0
    assert decoder.feed(b"2\r\nxy\r\n") == b"2\r\nxy\r\n"
    assert decoder.feed(b"\r\n0\r\n\r\n") == b"" and decoder.done


async def test_a_connection_is_reused_after_a_chunked_stream_read_to_the_end() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for index in range(3):
            await read_request(reader)
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            frame = b"data: %d\n\n" % index
            # The head, a chunk and the end in one write: the decoder starts from what the head left.
            writer.write(head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(frame), frame))
            await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        for index in range(3):
            response = await transport.handle_async_request(httpx.Request("POST", base + "/s", content=b"{}"))
            assert await response.aread() == b"data: %d\n\n" % index
        await transport.aclose()
    assert connections == 1


# --- the response head, the request bytes, and bodies framed every way ---------------------------


def test_a_response_head_is_parsed_names_lowercased_values_stripped() -> None:
    from proxies.loopback import parse_head

    head = parse_head(b"HTTP/1.1 404 Not Found\r\nContent-Type:  application/json \r\nX-A: 1:2")
    assert (head.status, head.reason, head.version) == (404, b"Not Found", b"1.1")
    assert head.headers == [(b"content-type", b"application/json"), (b"x-a", b"1:2")]
    assert parse_head(b"HTTP/1.0 200").reason == b""


@pytest.mark.parametrize(
    "data",
    [
        b"HTTP/2 200 OK",
        b"HTTP/1.1 2000 OK",
        b"ICY 200 OK",
        b"HTTP/1.1 200 OK\r\nNo colon",
        b"HTTP/1.1 200 OK\r\n folded: x",
        b"HTTP/1.1 200 OK\r\nName : x",
    ],
)
def test_a_malformed_head_is_a_protocol_error(data: bytes) -> None:
    from proxies.loopback import ProtocolError, parse_head

    with pytest.raises(ProtocolError):
        parse_head(data)


def test_a_request_is_one_block_and_a_header_with_a_line_break_is_left_out() -> None:
    from proxies.loopback import request_bytes

    data = request_bytes(
        b"POST",
        b"/v1/x",
        [(b"host", b"h:1"), (b"x-evil", b"a\r\nInjected: yes"), (b"bad name", b"v"), (b"x-ok", b"1")],
        b"{}",
    )
    assert data == b"POST /v1/x HTTP/1.1\r\nhost: h:1\r\nx-ok: 1\r\n\r\n{}"
    with pytest.raises(httpx.LocalProtocolError):
        request_bytes(b"GET", b"/a b", [], None)


async def test_interim_answers_are_skipped_and_a_body_until_close_is_read_whole() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\npart one, ")
        await writer.drain()
        writer.write(b"part two")
        writer.close()

    server, base = await serve(handler)
    async with server:
        response = await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/x"))
        assert response.status_code == 200
        assert await asyncio.wait_for(response.aread(), 5) == b"part one, part two"


async def test_a_pumped_stream_reaches_the_callback_as_it_arrives_and_the_connection_is_reused() -> None:
    connections = 0
    frames = [b"data: %d\n\n" % index for index in range(5)]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for frame in frames:
                writer.write(b"%x\r\n%s\r\n" % (len(frame), frame))
                await writer.drain()
                await asyncio.sleep(0.002)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        for _ in range(2):
            response = await transport.handle_async_request(httpx.Request("GET", base + "/s"))
            received: list[bytes] = []
            await asyncio.wait_for(response.stream.pump(received.append), 5)
            assert b"".join(received) == b"".join(frames) and len(received) >= 3
        await transport.aclose()
    assert connections == 1


async def test_a_pump_hands_whole_chunks_on_with_their_framing_and_the_rest_as_payload() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        for piece in (b"5\r\nhello\r\n", b"3\r\nab", b"c\r\n", b"1A\r\n" + b"z" * 26 + b"\r\n"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.02)  # each piece arrives on its own
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    server, base = await serve(handler)
    async with server:
        response = await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/s"))
        whole: list[bytes] = []
        payloads: list[bytes] = []

        def on_chunk(chunk: bytes, start: int) -> None:
            whole.append(chunk)
            payloads.append(chunk[start:-2])

        await asyncio.wait_for(response.stream.pump(payloads.append, on_chunk), 5)
    assert whole == [b"5\r\nhello\r\n", b"1A\r\n" + b"z" * 26 + b"\r\n"]
    assert b"".join(payloads) == b"hello" + b"abc" + b"z" * 26


async def test_a_pump_ends_with_an_error_when_the_runner_closes_mid_stream() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    server, base = await serve(handler)
    async with server:
        response = await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/s"))
        received: list[bytes] = []
        with pytest.raises(httpx.RemoteProtocolError):
            await asyncio.wait_for(response.stream.pump(received.append), 5)
        assert received == [b"hello"]


async def test_a_cancelled_pump_drops_the_connection() -> None:
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while True:
                writer.write(b"5\r\nhello\r\n")
                await writer.drain()
                await asyncio.sleep(0.005)
        except (ConnectionError, OSError):
            closed.set()

    server, base = await serve(handler)
    async with server:
        response = await LoopbackTransport().handle_async_request(httpx.Request("GET", base + "/s"))
        pump = asyncio.create_task(response.stream.pump(lambda data: None))
        await asyncio.sleep(0.05)
        pump.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pump
        await response.aclose()
        await asyncio.wait_for(closed.wait(), 5)


async def test_an_idle_connection_that_received_stray_bytes_is_not_reused() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                await read_request(reader)
                writer.write(reply(b"ok"))
                await writer.drain()
                if connections == 1:  # then, once the answer has been read, bytes nobody asked for
                    await asyncio.sleep(0.02)
                    writer.write(b"garbage")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        for _ in range(2):
            response = await transport.handle_async_request(httpx.Request("GET", base + "/x"))
            assert await response.aread() == b"ok"
            await asyncio.sleep(0.05)  # the stray bytes arrive while the connection is idle
        await transport.aclose()
    assert connections == 2


async def test_a_request_cancelled_while_the_runner_works_drops_the_connection() -> None:
    """How a client that gives up on a whole (non-streamed) answer stops llama-server."""
    closed = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        if await reader.read(1) == b"":  # never answers; waits for the relay to hang up
            closed.set()

    server, base = await serve(handler)
    async with server:
        transport = LoopbackTransport()
        request = asyncio.create_task(transport.handle_async_request(httpx.Request("POST", base + "/x")))
        await asyncio.sleep(0.05)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(closed.wait(), 5)
        assert not transport._idle.get(("127.0.0.1", int(base.rsplit(":", 1)[1])))
