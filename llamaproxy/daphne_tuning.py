"""Two changes to daphne's Twisted underpinnings, installed in the gateway process only.

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

2. No form parsing in Twisted. twisted.web parses every POST body's Content-Type with the email
package, and a multipart body (an audio upload) with it in full, to fill `request.args`, which
daphne never reads: it hands the raw body to Django. Twisted's own switch for that is off here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet import abstract, tcp

_INSTALLED = "_llamaproxy_eager_write"


def _idle(transport: abstract.FileDescriptor) -> bool:
    """Connected, not closing, and nothing waiting in either of Twisted's two buffers."""
    return (
        transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and not transport._tempDataLen
        and transport.offset >= len(transport.dataBuffer)
    )


def eager_write(transport: abstract.FileDescriptor, data: bytes) -> None:
    if data and type(data) is bytes and _idle(transport):
        sent = transport.writeSomeData(data)
        # An exception (connection lost) or 0 (socket full): Twisted's path finds out the same.
        if isinstance(sent, int) and sent > 0:
            if sent >= len(data):
                return
            data = data[sent:]
    abstract.FileDescriptor.write(transport, data)


def eager_write_sequence(transport: abstract.FileDescriptor, iovec: Iterable[bytes]) -> None:
    if _idle(transport):
        parts = list(iovec)
        if all(type(part) is bytes for part in parts):
            eager_write(transport, b"".join(parts))
            return
        iovec = parts
    abstract.FileDescriptor.writeSequence(transport, iovec)


def install() -> bool:
    """Patch tcp.Connection and daphne's request class (once); True when this call installed them."""
    if getattr(tcp.Connection, _INSTALLED, False):
        return False
    tcp.Connection.write = eager_write  # type: ignore[method-assign]
    tcp.Connection.writeSequence = eager_write_sequence  # type: ignore[method-assign]
    setattr(tcp.Connection, _INSTALLED, True)
    _no_form_parsing()
    return True


def _no_form_parsing() -> None:
    from daphne.http_protocol import WebRequest

    original = WebRequest.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        self._parsePOSTFormSubmission = False

    WebRequest.__init__ = __init__  # type: ignore[method-assign]
