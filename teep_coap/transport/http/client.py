"""The Broker side of TEEP over HTTP(S) (draft-ietf-teep-otrp-over-http-15) with aiohttp.

POST only, `Accept` on every request and `Content-Type` when there is a body, redirects never
followed, no cookie jar, one time limit on every request. 200 with a body = the TAM's next message,
204 (or 2xx without a body) = nothing more; anything else is a typed `TransportError`.
"""

from __future__ import annotations

import ssl

import aiohttp

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.transport.base import PeerRejected, TransportError, TransportTimeout
from teep_coap.transport.http import rules

USER_AGENT = "teep-coap-broker/0.1"


class HttpBrokerClient:
    """`MessageClient` for one TAM URI; keeps one connection open for the session (HTTP/1.1 keep-alive)."""

    def __init__(
        self,
        uri: str,
        media_type: str = MEDIA_TYPE_TEEP_CBOR,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 20.0,
        *,
        max_message_size: int = 1_048_576,
        also_accept: tuple[str, ...] = (),
    ) -> None:
        if not uri.startswith(("http://", "https://")):
            raise TransportError(f"TAM URI must be http:// or https://, got {uri!r}")
        if timeout <= 0:
            raise TransportError(f"timeout must be positive, got {timeout}")
        self.uri = uri
        self.media_type = media_type
        # older media types taken too (a profile's compatibility setting); once the TAM answered in
        # one of them, our messages go in that type
        self.also_accept = tuple(also_accept)
        self._send_as = media_type
        self.ssl_context = ssl_context
        self.timeout = timeout
        self.max_message_size = max_message_size
        self._session: aiohttp.ClientSession | None = None
        self.exchanges = 0

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                ssl=self.ssl_context if self.ssl_context is not None else True,
                limit=1,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                cookie_jar=aiohttp.DummyCookieJar(),  # the draft: no cookies
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": USER_AGENT},
                auto_decompress=False,
            )
        return self._session

    async def post(self, payload: bytes) -> bytes | None:
        """POST one message (empty = start a session); the TAM's answer, or None when it is done."""
        headers = {"Accept": ", ".join((self.media_type, *self.also_accept))}
        if payload:
            headers["Content-Type"] = self._send_as
        session = self._open()
        try:
            # aiohttp would add `Content-Type: application/octet-stream` to an empty body and
            # `Accept-Encoding: gzip, deflate` to all: the draft's requests carry neither.
            skip = ("Accept-Encoding",) if payload else ("Accept-Encoding", "Content-Type")
            async with session.post(
                self.uri, data=payload, headers=headers, allow_redirects=False, skip_auto_headers=skip
            ) as response:
                self.exchanges += 1
                if response.status == rules.STATUS_MESSAGE or 200 <= response.status < 300:
                    length = response.content_length
                    if length is not None and length > self.max_message_size:
                        raise TransportError(f"TAM message of {length} bytes is over {self.max_message_size}")
                    body, over = await rules.read_capped(response.content, self.max_message_size)
                    if over:
                        raise TransportError(f"TAM message is over {self.max_message_size} bytes")
                    if not body:
                        return None
                    got = rules.media_type_of(response.headers.get("Content-Type"))
                    if got != self.media_type and got not in self.also_accept:
                        raise TransportError(
                            f"TAM answered Content-Type {got or 'none'!r}, want {self.media_type}"
                        )
                    self._send_as = got
                    return body
                detail = (await response.content.read(512)).decode("utf-8", "replace").strip()
                if 300 <= response.status < 400:
                    detail = f"redirect to {response.headers.get('Location', '?')} not followed"
                retry = response.headers.get("Retry-After")
                if retry:
                    detail = f"{detail} (Retry-After: {retry})"
                raise PeerRejected(str(response.status), detail)
        except TimeoutError:
            raise TransportTimeout(f"no answer from {self.uri} within {self.timeout:g}s") from None
        except aiohttp.ClientConnectorCertificateError as exc:
            raise TransportError(f"TLS certificate of {self.uri} refused: {exc.certificate_error}") from None
        except aiohttp.ClientSSLError as exc:
            raise TransportError(f"TLS failure with {self.uri}: {exc}") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"HTTP failure with {self.uri}: {exc}") from None

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> HttpBrokerClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
