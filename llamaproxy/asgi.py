"""ASGI entry point: one daphne process serves every face; the local port picks the URLconf.

API faces (OpenAI, Ollama, LM Studio) run through a lean handler whose only middleware is the
face router, so the relay hot path never hops into a thread for session/CSRF middleware.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "llamaproxy.settings")

from django.core.asgi import get_asgi_application

django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django import db  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.cache import close_caches  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler, get_script_prefix  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from django.urls import set_script_prefix  # noqa: E402

from llamaproxy.daphne_tuning import abort, body_writer, on_connection_lost  # noqa: E402
from llamaproxy.fast_lane import fast_lane  # noqa: E402
from llamaproxy.routing import websocket_urlpatterns  # noqa: E402

LEAN_MIDDLEWARE = ["llamaproxy.middleware.FaceRoutingMiddleware"]
NO_BODY_STATUSES = frozenset({204, 304})


class LeanASGIHandler(ASGIHandler):
    """Django's handler for the API faces, trimmed for the relay's hot path.

    - The only middleware is the face router (API faces authenticate by key, not session).
    - No per-request ThreadSensitiveContext, and the response is closed in the loop: Django's
      own handler closes every response through `sync_to_async`, which inside a fresh
      ThreadSensitiveContext starts (and joins) a new thread for each request.
    """

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=LEAN_MIDDLEWARE):
            super().load_middleware(is_async=is_async)

    async def __call__(self, scope, receive, send):
        await self.handle(scope, receive, send)

    async def read_body(self, receive):
        """A body that came whole in one message (daphne sends a JSON request so) and fits in
        memory is wrapped as it is; Django's reader copies every body into a spooled temporary file."""
        message = await receive()
        body = message.get("body", b"")
        if (
            message["type"] == "http.request"
            and not message.get("more_body", False)
            and len(body) <= settings.FILE_UPLOAD_MAX_MEMORY_SIZE
        ):
            return io.BytesIO(body)
        pending = [message]

        async def replayed():
            return pending.pop() if pending else await receive()

        return await super().read_body(replayed)

    async def run_get_response(self, request):
        """The relay's busiest routes skip URL resolving, middleware and django-ninja's wrapper
        (see fast_lane.py); everything else takes Django's path."""
        lane = fast_lane.lane(request)
        if lane is None:
            return await super().run_get_response(request)
        response = await fast_lane.run(lane, request)
        response._resource_closers.append(request.close)
        response._handler_class = self.__class__
        return response

    async def send_response(self, response, send):
        """Relayed streams skip Django's iterator wrappers: each upstream chunk is sent as is,
        under daphne straight from the runner connection (see daphne_tuning.body_writer)."""
        stream = getattr(response, "relay_stream", None)
        if stream is None:
            if not response.streaming and response.status_code not in NO_BODY_STATUSES:
                # What CommonMiddleware does on Django's path: with its length known, a whole answer
                # goes out in one send, not as one chunk and then the chunked terminator (a second
                # send the client has to wait for).
                response.headers.setdefault("Content-Length", str(len(response.content)))
            return await super().send_response(response, send)
        headers = [(key.encode("ascii"), value.encode("latin1")) for key, value in response.items()]
        iterator = None
        try:
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            writer = body_writer(send) if hasattr(stream, "pump") else None
            if writer is not None:
                await stream.pump(writer.write, writer.write_chunk)
            else:
                iterator = aiter(stream)
                async for chunk in iterator:
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except Exception:
            abort(send)  # the response has started: no error status can be sent any more
            raise
        finally:
            if iterator is not None and iterator is not stream:
                await iterator.aclose()
            await stream.aclose()  # a relay never started still releases its runner
        await send({"type": "http.response.body"})
        return None

    async def handle(self, scope, receive, send):
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        await self.handle_body(scope, body_file, receive, send)

    async def handle_direct(self, scope, body, send) -> None:
        """A request daphne's direct lane took (see daphne_tuning.direct_lane): its body came
        whole, as bytes or (an upload) as the file Twisted received it into."""
        await self.handle_body(scope, io.BytesIO(body) if isinstance(body, bytes) else body, None, send)

    async def handle_body(self, scope, body_file, receive, send):
        prefix = get_script_prefix(scope)  # daphne's root path: "" unless configured
        if prefix not in ("", "/"):  # each request's task starts from the loop's context, where it is "/"
            set_script_prefix(prefix)
        await signals.request_started.asend(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            body_file.close()
            await self.send_response(error_response, send)
            error_response.close()
            return
        try:
            await self.answer(request, receive, send)
        finally:
            body_file.close()

    async def answer(self, request, receive, send) -> None:
        """Produce and send the response in this task; a client that goes away meanwhile cancels
        it (as Django's handler does), which closes the upstream request of a relay.

        Under daphne the lost connection is reported by a callback; Django's own way, a second
        task waiting on `receive` beside a third that makes the response, costs each request two
        tasks and, as daphne sends `http.disconnect` after every response, an exception."""
        task = asyncio.current_task()
        lost = False

        def connection_lost() -> None:
            nonlocal lost
            lost = True
            task.cancel()

        watched = on_connection_lost(send, connection_lost)
        if watched is None:
            return await self.answer_with_listener(request, receive, send)
        if watched is False:  # gone already
            await signals.request_finished.asend(sender=self.__class__)
            return None
        try:
            response = await self.run_get_response(request)
        except asyncio.CancelledError:
            if not lost:
                raise
            task.uncancel()
            await signals.request_finished.asend(sender=self.__class__)
            return None
        try:
            await self.send_response(response, send)
        except asyncio.CancelledError:  # the client went away mid-send
            if not lost:
                raise
            task.uncancel()
        response.close()
        return None

    async def answer_with_listener(self, request, receive, send) -> None:
        """Django's way, for other ASGI servers: a task that waits for `http.disconnect` cancels
        the one that makes and sends the response."""

        async def process_request() -> object:
            response = await self.run_get_response(request)
            with contextlib.suppress(asyncio.CancelledError):  # the client went away mid-send
                await self.send_response(response, send)
            return response

        listener = asyncio.create_task(self.listen_for_disconnect(receive))
        worker = asyncio.create_task(process_request())
        await asyncio.wait([listener, worker], return_when=asyncio.FIRST_COMPLETED)
        for task in (listener, worker):
            if task.done():
                with contextlib.suppress(RequestAborted):
                    task.result()
            else:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        try:
            response = worker.result()
        except asyncio.CancelledError:
            await signals.request_finished.asend(sender=self.__class__)
        else:
            response.close()


# Django's per-request database housekeeping is synchronous, so each of these receivers would
# cost every request a hop into a thread. The gateway keeps its SQLite connections open
# instead (one per thread, WAL mode), which is also cheaper.
signals.request_started.disconnect(db.close_old_connections)
signals.request_started.disconnect(db.reset_queries)
signals.request_finished.disconnect(db.close_old_connections)

# After each request Django closes every cache's connections, looking each one up in
# context-local storage: a tenth of the gateway's CPU per short request in profiles. Caches in
# the process's own memory have no connection to close.
PROCESS_LOCAL_CACHES = {
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
}
if all(cache["BACKEND"] in PROCESS_LOCAL_CACHES for cache in settings.CACHES.values()):
    signals.request_finished.disconnect(close_caches)

lean_app = LeanASGIHandler()
api_ports = {port for face, port in settings.LLAMAPROXY_PORTS.items() if port and face != "dashboard"}

# In the gateway (daphne): small writes sent at once, no form parsing nobody reads, and the fast
# lane's routes (API ports only) reaching the lean handler from daphne directly.
if os.environ.get("LLAMAPROXY_PROCESS") == "gateway":
    from llamaproxy import daphne_tuning

    daphne_tuning.install()
    daphne_tuning.direct_lane(
        {(int(port), path.encode()) for port, path in fast_lane.routes},
        lean_app.handle_direct,
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE,
        # Ollama's blob uploads (model files) are read from Twisted's file, never queued in memory.
        {(int(settings.LLAMAPROXY_PORTS["ollama"]), b"/api/blobs/")}
        if settings.LLAMAPROXY_PORTS.get("ollama")
        else (),
    )


async def http_app(scope, receive, send):
    server = scope.get("server") or (None, None)
    if server[1] in api_ports:
        return await lean_app(scope, receive, send)
    return await django_app(scope, receive, send)


def dashboard_only(app):
    """The live channel belongs to the dashboard: API ports refuse WebSocket upgrades."""

    async def guard(scope, receive, send):
        server = scope.get("server") or (None, None)
        if server[1] in api_ports:
            await send({"type": "websocket.close", "code": 4404})
            return None
        return await app(scope, receive, send)

    return guard


application = ProtocolTypeRouter(
    {
        "http": http_app,
        "websocket": dashboard_only(
            AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
        ),
    }
)

if os.environ.get("LLAMAPROXY_PROCESS") == "gateway":
    import gc

    # Everything loaded so far (Django, the apps, the faces' URLconfs and views) lives as long as
    # the process: frozen, the cyclic collector no longer walks it. Unfrozen, each full
    # collection walked the whole heap, about 85 ms with every request and stream waiting.
    fast_lane.routes  # noqa: B018 (resolving the URLconfs loads the faces' modules now)
    gc.collect()
    gc.freeze()
