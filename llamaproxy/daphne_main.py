"""`python -m llamaproxy.daphne_main <daphne arguments>`: daphne, on uvloop's event loop.

daphne runs Twisted on an asyncio loop that it creates when `daphne.server` is first imported;
the loop policy set here, before that import, makes it a uvloop loop. Twisted's asyncio reactor
only needs `add_reader`/`add_writer`, timers and thread-safe callbacks, which uvloop provides,
and every socket event then costs C (libuv) instead of asyncio's Python selector loop: on a
streamed completion that is one event per token, on the cores that generate the tokens.
"""

from __future__ import annotations

import asyncio

import uvloop


def main() -> None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from daphne.cli import CommandLineInterface

    CommandLineInterface.entrypoint()


if __name__ == "__main__":
    main()
