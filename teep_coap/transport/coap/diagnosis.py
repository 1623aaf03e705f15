"""One line saying what is most likely wrong when a CoAP/DTLS exchange with the TAM fails.

aiocoap reports a refused port, a DTLS alert and a handshake that never ends as a bare
`NetworkError` or a timeout; an operator needs the cause. What each symptom most likely means (seen
with our TAM and aiocoap 0.4.17 / tinydtls):

- ICMP port unreachable (`ConnectionRefusedError` under aiocoap's NetworkError): nothing listens on
  that address and port;
- a fatal DTLS alert during the handshake: tinydtls' server sends `internal_error` (80) when the PSK
  identity is not in its key store; `handshake_failure`, `bad_record_mac` or `decrypt_error` point
  at a PSK that does not match;
- a wrong PSK: tinydtls drops a Finished it cannot verify without an alert (RFC 6347 §4.1.2.7), so
  our TAM answers it with a fatal `decrypt_error` itself (`aiocoap_compat.tidy_dtls_server`);
- a handshake that got answers from the TAM but never finished: a TAM that does not send that alert
  (another implementation) and a wrong PSK, or a TAM too busy to finish handshakes;
- a handshake that got no answer at all: no DTLS server there (or a firewall).
"""

from __future__ import annotations

ALERT_NAMES = {
    20: "bad_record_mac",
    40: "handshake_failure",
    47: "illegal_parameter",
    51: "decrypt_error",
    80: "internal_error",
    115: "unknown_psk_identity",
}
UNKNOWN_IDENTITY_ALERTS = {80, 115}
WRONG_PSK_ALERTS = {20, 40, 51}


def _walk(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return chain


def explain_error(exc: BaseException, uri: str, identity: str | None) -> str | None:
    """The likely cause of an aiocoap error from a request to `uri`, or None if it is not known."""
    for e in _walk(exc):
        if isinstance(e, ConnectionRefusedError):
            return f"nothing is listening at {uri} (connection refused): is the TAM running, on that port?"
        if type(e).__name__ == "FatalDTLSError" and e.args and isinstance(e.args[0], int):
            code = e.args[0]
            name = ALERT_NAMES.get(code, str(code))
            if code in UNKNOWN_IDENTITY_ALERTS:
                return (
                    f"the TAM at {uri} refused the DTLS handshake (alert {name}): it most likely does not "
                    f"know the PSK identity {identity!r} (add the device with `teep-coap tam credentials`)"
                )
            if code in WRONG_PSK_ALERTS:
                return (
                    f"the TAM at {uri} refused the DTLS handshake (alert {name}): the device's DTLS PSK "
                    "most likely does not match the TAM's credentials.toml"
                )
            return f"the TAM at {uri} ended the DTLS handshake with alert {name}"
    return None


def explain_edhoc_error(exc: BaseException, uri: str) -> str:
    """One line for an EDHOC handshake lakers refused (its errors read "EDHOCError::Name")."""
    name = str(exc).split("::", 1)[-1]
    if name == "MacVerificationFailed":
        return (
            f"the EDHOC handshake with {uri} failed ({name}): the TAM proved a key other than the one in "
            "transport.toml's edhoc_peer_hex (another TAM, or the device was provisioned for another TAM)"
        )
    if name.startswith("UnreadablePeerMessage"):
        return (
            f"the EDHOC handshake with {uri} failed: its message_2 is malformed ({name}); "
            "is it a TEEP TAM or gateway speaking EDHOC (method 3, cipher suite 2)?"
        )
    return f"the EDHOC handshake with {uri} failed ({name})"


def explain_timeout(uri: str, seconds: float, *, handshaking: bool, heard: int) -> str:
    """The timeout message: what the client saw of the TAM says what is most likely wrong."""
    base = f"no answer from {uri} within {seconds:g} s"
    if not handshaking:
        return base
    if heard:
        return (
            f"{base}: the TAM answered the DTLS handshake but never completed it: most likely the "
            "device's DTLS PSK does not match the TAM's credentials.toml (wrong DTLS PSK), or the TAM "
            "is too busy to finish handshakes"
        )
    return f"{base}: nothing answered the DTLS handshake: is a coaps TAM running at that address and port?"


__all__ = ["explain_edhoc_error", "explain_error", "explain_timeout"]
