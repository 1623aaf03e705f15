"""The TAM side of TEEP over HTTP(S) (draft-ietf-teep-otrp-over-http-15) with aiohttp.

One route, POST only. The body is opaque: it goes to the `MessageHandler` and whatever bytes come back
are the answer (200 with the message, 204 when the handler has nothing more). The server enforces the
draft's rules (415, Accept, required headers, no Cache-Control) and our own bounds (413 over the
configured size, 503 + Retry-After above the number of requests in flight, 500 when the handler
fails or takes longer than its time limit).

Beside it, `GET /health` (transport.health) answers 200 `ok pid N` for a load balancer. The port
is bound without SO_REUSEPORT, so a port another program holds is refused (`PortInUse`), except in
a worker of `tam serve --workers N` on the address its parent probed (transport.shared_port): the
workers bind it together and the kernel hands each new connection to one of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import ssl
from dataclasses import dataclass

from aiohttp import web

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.transport.base import MessageHandler, PeerInfo, Rejection, RequestRejected, TransportError
from teep_coap.transport.health import HEALTH_PATH, health_text
from teep_coap.transport.http import connections as http_connections
from teep_coap.transport.http import rules
from teep_coap.transport.http.connections import ConnectionGuard
from teep_coap.transport.junklog import install_junk_log_limit
from teep_coap.transport.shared_port import port_in_use, port_shared_by_parent

log = logging.getLogger(__name__)

REJECTION_STATUS: dict[Rejection, int] = {
    Rejection.BAD_REQUEST: rules.STATUS_BAD_REQUEST,
    Rejection.FORBIDDEN: rules.STATUS_FORBIDDEN,
    Rejection.UNSUPPORTED_MEDIA: rules.STATUS_UNSUPPORTED_MEDIA,
    Rejection.TOO_LARGE: rules.STATUS_TOO_LARGE,
    Rejection.SERVER_ERROR: rules.STATUS_SERVER_ERROR,
    Rejection.OVERLOADED: rules.STATUS_OVERLOADED,
    Rejection.BAD_GATEWAY: rules.STATUS_BAD_GATEWAY,
    Rejection.GATEWAY_TIMEOUT: rules.STATUS_GATEWAY_TIMEOUT,
}
HEALTH_STATUS = 200


@dataclass(frozen=True)
class HttpServerOptions:
    """How the TAM listens. `port=0` picks a free port (read it back from `start()`)."""

    host: str = "127.0.0.1"
    port: int = 0
    path: str = rules.DEFAULT_PATH
    media_type: str = MEDIA_TYPE_TEEP_CBOR
    # older media types accepted too (a profile's compatibility setting); the answer is sent in the
    # type the request used, so an old peer gets back what it speaks
    also_accept: tuple[str, ...] = ()
    ssl_context: ssl.SSLContext | None = None
    max_message_size: int = 1_048_576
    max_concurrent_requests: int = 64
    retry_after: int = 2  # seconds, sent with 503
    handler_timeout: float = 20.0  # seconds one handler call may take before the answer is 500

    @property
    def scheme(self) -> str:
        return "https" if self.ssl_context is not None else "http"


def _peer_info(request: web.Request, scheme: str) -> PeerInfo:
    """Transport facts about the client; with a verified client certificate, its subject CN."""
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    address = f"{peername[0]}:{peername[1]}" if peername else "?"
    identity = None
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is not None:
        cert = ssl_object.getpeercert()
        if cert:
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        identity = value
    return PeerInfo(transport=scheme, address=address, identity=identity, authenticated=identity is not None)


class _TlsBoundSite(web.TCPSite):
    """aiohttp's TCPSite with TLS handshakes bounded in time (REQUEST_DEADLINE) and in number
    (`TlsHandshakes`). aiohttp passes no handshake timeout, so asyncio's 60 s applied: connections
    that never start TLS are not aiohttp's yet (the `ConnectionGuard` sees a connection once its
    handshake is done), and 1,100 of them, reopened once a minute, took every descriptor of a TAM
    whose open-file limit was 1,024. Each connection now gets its TLS from `loop.start_tls`, so the
    handshakes in progress can be counted and the oldest closed for a new one."""

    handshakes: http_connections.TlsHandshakes | None = None

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (cleaned up with it)
        server = self._runner.server
        if server is None:
            raise TransportError("HTTP server started before its runner was set up")
        ssl_context = self._ssl_context
        assert ssl_context is not None
        handshakes = self.handshakes = http_connections.TlsHandshakes()
        deadline = http_connections.REQUEST_DEADLINE
        self._server = await asyncio.get_running_loop().create_server(
            lambda: http_connections.TlsAccept(server, ssl_context, handshakes, deadline),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=self._reuse_address,
            reuse_port=self._reuse_port,
        )

    async def stop(self) -> None:
        if self.handshakes is not None:
            self.handshakes.close()
        await super().stop()


class HttpTamServer:
    """aiohttp server that hands each POST body to a `MessageHandler`."""

    def __init__(self, handler: MessageHandler, options: HttpServerOptions | None = None) -> None:
        self.handler = handler
        self.options = options or HttpServerOptions()
        self._runner: web.AppRunner | None = None
        self._in_flight = 0
        self._guard: ConnectionGuard | None = None
        self._port: int | None = None
        self.requests_served = 0

    @property
    def port(self) -> int:
        if self._port is None:
            raise TransportError("HTTP server is not started")
        return self._port

    @property
    def uri(self) -> str:
        """The TAM URI a Broker posts to."""
        host = self.options.host
        if ":" in host:
            host = f"[{host}]"
        return f"{self.options.scheme}://{host}:{self.port}{self.options.path}"

    def _reply(self, status: int, text: str = "", extra: dict[str, str] | None = None) -> web.Response:
        headers = dict(rules.SECURITY_HEADERS)
        if extra:
            headers.update(extra)
        if status == rules.STATUS_DONE:
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, text=text + "\n" if text else None, headers=headers)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._serve_request(request)
        finally:  # whatever the answer, the connection's next request has a new deadline
            if self._guard is not None:
                self._guard.answered(request.protocol)

    async def _serve_request(self, request: web.Request) -> web.StreamResponse:
        opts = self.options
        if request.method != "POST":
            return self._reply(rules.STATUS_METHOD_NOT_ALLOWED, "only POST is used", {"Allow": "POST"})
        if rules.first_accepted(request.headers.get("Accept"), (opts.media_type, *opts.also_accept)) is None:
            return self._reply(rules.STATUS_NOT_ACCEPTABLE, f"Accept must include {opts.media_type}")
        length = request.content_length
        if length is not None and length > opts.max_message_size:
            return self._reply(rules.STATUS_TOO_LARGE, f"message over {opts.max_message_size} bytes")
        if self._in_flight >= opts.max_concurrent_requests:
            return self._overloaded()
        # The body arrives while the connection is still unfinished (`ConnectionGuard`: closed if
        # it takes too long); only a whole request counts among the requests in flight.
        try:
            body, over = await rules.read_capped(request.content, opts.max_message_size)
            if over:
                return self._reply(rules.STATUS_TOO_LARGE, f"message over {opts.max_message_size} bytes")
        except (TimeoutError, ConnectionError) as exc:  # the client went away, or was sent away
            return self._reply(rules.STATUS_BAD_REQUEST, f"cannot read body: {exc}")
        if self._in_flight >= opts.max_concurrent_requests:
            return self._overloaded()
        self._complete(request)
        self._in_flight += 1
        try:
            return await self._serve_counted(request, body)
        finally:
            self._in_flight -= 1

    def _overloaded(self) -> web.Response:
        retry = {"Retry-After": str(self.options.retry_after)}
        return self._reply(rules.STATUS_OVERLOADED, "too many requests in flight", retry)

    def _complete(self, request: web.Request) -> None:
        """A whole request goes to the handler: its connection is busy, not unfinished, till answered."""
        if self._guard is not None:
            self._guard.request_complete(request.protocol)

    async def _serve_counted(self, request: web.Request, body: bytes) -> web.StreamResponse:
        opts = self.options
        ours = (opts.media_type, *opts.also_accept)
        sent_as = rules.media_type_of(request.headers.get("Content-Type"))
        if body and sent_as not in ours:
            return self._reply(rules.STATUS_UNSUPPORTED_MEDIA, f"Content-Type must be {opts.media_type}")
        answer_as = sent_as if body else rules.first_accepted(request.headers.get("Accept"), ours)
        peer = _peer_info(request, opts.scheme)
        try:
            answer = await asyncio.wait_for(self.handler(body, peer), timeout=opts.handler_timeout)
        except RequestRejected as exc:
            extra = {}
            if exc.rejection is Rejection.OVERLOADED:
                extra["Retry-After"] = str(
                    math.ceil(exc.retry_after) if exc.retry_after is not None else opts.retry_after
                )
            return self._reply(REJECTION_STATUS[exc.rejection], exc.reason, extra)
        except TimeoutError:
            log.warning("TAM handler took longer than %.1fs", opts.handler_timeout)
            return self._reply(rules.STATUS_SERVER_ERROR, "TAM did not answer in time")
        except Exception:  # any handler failure is the TAM's, and the draft says 5xx
            log.exception("TAM handler failed")
            return self._reply(rules.STATUS_SERVER_ERROR, "TAM failed")
        self.requests_served += 1
        if not answer:
            return self._reply(rules.STATUS_DONE)
        headers = dict(rules.SECURITY_HEADERS)
        headers["Content-Type"] = answer_as or opts.media_type
        return web.Response(status=rules.STATUS_MESSAGE, body=answer, headers=headers)

    async def _health(self, request: web.Request) -> web.StreamResponse:
        """`GET /health`: the process serves (no database, no handler: cheap for anyone to ask)."""
        if request.method not in ("GET", "HEAD"):
            return self._reply(
                rules.STATUS_METHOD_NOT_ALLOWED, "only GET is served here", {"Allow": "GET, HEAD"}
            )
        if self._guard is not None:
            self._guard.answered(request.protocol)
        return self._reply(HEALTH_STATUS, health_text(), {"Cache-Control": "no-store"})

    async def start(self) -> int:
        """Listen; returns the bound port."""
        if self._runner is not None:
            return self.port
        install_junk_log_limit()  # refused sessions' log lines are rate-limited (transport.junklog)
        # client_max_size bounds aiohttp's own buffering too; we read the body ourselves with a limit.
        app = web.Application(client_max_size=self.options.max_message_size + 1)
        app.router.add_route("*", self.options.path, self._serve)
        if self.options.path != HEALTH_PATH:
            app.router.add_route("*", HEALTH_PATH, self._health)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        guard = ConnectionGuard()
        guard.attach(runner.server)
        host, port = self.options.host, self.options.port
        shared = port_shared_by_parent("tcp", host, port)  # a `tam serve --workers` worker
        site_kind = _TlsBoundSite if self.options.ssl_context is not None else web.TCPSite
        site = site_kind(runner, host, port, ssl_context=self.options.ssl_context, reuse_port=shared)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise port_in_use("tcp", host, port) from None
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self._runner = runner
        self._guard = guard
        guard.start(asyncio.get_running_loop())
        server = site._server  # aiohttp keeps the asyncio server here; the bound port is only on it
        sockets = getattr(server, "sockets", None) or []
        if not sockets:
            await self.stop()
            raise TransportError("HTTP server has no listening socket")
        self._port = int(sockets[0].getsockname()[1])
        return self._port

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        runner, self._runner = self._runner, None
        guard, self._guard = self._guard, None
        if guard is not None:
            guard.stop()
        if runner is not None:
            with contextlib.suppress(Exception):
                await runner.cleanup()

    close = stop  # the CoAP server's name for it

    async def __aenter__(self) -> HttpTamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
