"""A bare TCP relay, the gateway benchmark's yardstick for what one more process in the path costs.

Each accepted connection gets its own connection to the target, and bytes are copied both ways
as they arrive: no HTTP parsing, no accounting, no routing. It runs on uvloop, as the gateway
does. Whatever it adds over direct llama-server is the price of the extra hop on this machine
(two more socket sends, two more wake-ups per message), which any proxy pays before doing any
work of its own.

Usage: python bench/tcp_relay.py LISTEN_PORT TARGET_PORT  (both on 127.0.0.1)
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

HOST = "127.0.0.1"


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.transport: asyncio.Transport | None = None
        self.upstream: asyncio.Transport | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        try:
            upstream, _ = await asyncio.get_running_loop().create_connection(
                lambda: _Upstream(self.transport), HOST, self.target_port
            )
        except OSError:
            self.transport.close()
            return
        self.upstream = upstream
        for data in self.early:
            upstream.write(data)
        self.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None:
            self.upstream.close()


async def serve(listen_port: int, target_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(target_port), HOST, listen_port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), int(sys.argv[2])))
