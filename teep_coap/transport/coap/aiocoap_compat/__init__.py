"""Every use of aiocoap's internals, in one place, for the one aiocoap release it was written for.

teep-coap adapts aiocoap 0.4.17 where its public API cannot do what a TAM under attack needs:
bounded per-peer caches, 4.08 for a Block1 gap, junk options dropped instead of raised, cheaper
option copies, DTLS sessions that end and are bounded, a DTLS retransmission timer on the right clock,
and an early look at each plain-CoAP datagram before aiocoap's dispatch. Each of those touches names
aiocoap does not promise to keep (attributes and methods starting with `_`). They all live here, and
no other module may touch them (`tests/transport/test_aiocoap_compat.py` greps for it), so moving to
another aiocoap release means reading this one package (one module per adaptation: `dtls`,
`messages`, `site`, `oscore`, `addresses` (memoised address text), `option_memo` (repeated option
values decoded once), `fastpath` (the TEEP resource's
requests without aiocoap's per-request pipe), `drain` (queued datagrams read per wake-up), with
`contexts` to find things inside a Context).

Importing this package checks the installed aiocoap version: another one raises
`AiocoapVersionError` naming both versions, unless the environment variable
`TEEP_COAP_AIOCOAP_UNCHECKED=1` says to go on anyway (then each adaptation is applied as written,
at the operator's risk, with one warning).

**DTLS retransmission clock.** tinydtls (DTLSSocket 0.2.3) counts milliseconds from a whole second
reset by every `DTLS()` constructor; aiocoap 0.4.17 turns its "next retransmission at T" into a sleep
on its own clock, which starts at aiocoap's import. In a program that handshakes seconds after the
import (every `agent run`) the wait was negative and `_run_retransmissions` spun at full CPU through
every handshake (client) or re-created its task in a busy loop (server). `apply_dtls_fixes()` keeps
tinydtls' clock on its first origin, sleeps on that clock (RETRANSMIT_FLOOR to RETRANSMIT_CEILING),
and counts the datagrams each client connection receives (`datagrams_received`, for `diagnosis`).
Upstream-style, the timer fix belongs in aiocoap's tinydtls*.py, the clock in DTLSSocket.
"""

from __future__ import annotations

import aiocoap.meta

from teep_coap.transport.coap.aiocoap_compat.version import (
    UNCHECKED_ENV,
    WRITTEN_FOR,
    AiocoapVersionError,
    check_version,
)

check_version(aiocoap.meta.version)  # before any module below touches aiocoap's internals

from teep_coap.transport.coap.aiocoap_compat.addresses import ADDRESS_CACHE, cache_address_text  # noqa: E402
from teep_coap.transport.coap.aiocoap_compat.contexts import dtls_pool, message_interfaces, server_socket  # noqa: E402
from teep_coap.transport.coap.aiocoap_compat.drain import READ_BATCH, drain_server_reads  # noqa: E402
from teep_coap.transport.coap.aiocoap_compat.dtls import (  # noqa: E402
    RETRANSMIT_CEILING,
    RETRANSMIT_FLOOR,
    apply_dtls_fixes,
    datagrams_received,
    dtls_client_app_records,
    dtls_client_in_handshake,
    dtls_client_sessions,
    dtls_fixes_applied,
    dtls_server_sessions,
    restarts_authenticated_session,
    retransmission_wait,
    tidy_dtls_server,
    tinydtls_now,
)
from teep_coap.transport.coap.aiocoap_compat.fastpath import (  # noqa: E402
    FastPath,
    Responder,
    install_fast_path,
    serve_later_blocks_over_dtls,
)
from teep_coap.transport.coap.aiocoap_compat.messages import (  # noqa: E402
    RESPONSE_LIMIT,
    BoundedBlock1Spool,
    BoundedBlock2Cache,
    BoundedTimeoutDict,
    DatagramGate,
    ResponseTooLarge,
    block_key,
    bound_duplicate_caches,
    bound_resource_caches,
    bound_response_assembly,
    duplicate_caches,
    encode_reply,
    harden_message_decode,
    install_datagram_gate,
    spool_block,
)
from teep_coap.transport.coap.aiocoap_compat.option_memo import (  # noqa: E402
    OPTION_MEMO,
    memoise_option_decoding,
)
from teep_coap.transport.coap.aiocoap_compat.oscore import (  # noqa: E402
    EDHOC_ECHO,
    apply_edhoc_client_fix,
    apply_edhoc_server_guard,
    edhoc_handshake_finished,
    edhoc_message_1_from,
    is_edhoc_responder_context,
    release_oscore_context,
)
from teep_coap.transport.coap.aiocoap_compat.site import ExactPathSite, with_shared_options  # noqa: E402

__all__ = [
    "ADDRESS_CACHE",
    "EDHOC_ECHO",
    "OPTION_MEMO",
    "READ_BATCH",
    "RESPONSE_LIMIT",
    "RETRANSMIT_CEILING",
    "RETRANSMIT_FLOOR",
    "UNCHECKED_ENV",
    "WRITTEN_FOR",
    "AiocoapVersionError",
    "BoundedBlock1Spool",
    "BoundedBlock2Cache",
    "BoundedTimeoutDict",
    "DatagramGate",
    "ExactPathSite",
    "FastPath",
    "Responder",
    "ResponseTooLarge",
    "apply_dtls_fixes",
    "apply_edhoc_client_fix",
    "apply_edhoc_server_guard",
    "block_key",
    "bound_duplicate_caches",
    "bound_resource_caches",
    "bound_response_assembly",
    "cache_address_text",
    "check_version",
    "datagrams_received",
    "drain_server_reads",
    "dtls_client_app_records",
    "dtls_client_in_handshake",
    "dtls_client_sessions",
    "dtls_fixes_applied",
    "dtls_pool",
    "dtls_server_sessions",
    "duplicate_caches",
    "edhoc_handshake_finished",
    "edhoc_message_1_from",
    "encode_reply",
    "harden_message_decode",
    "install_datagram_gate",
    "install_fast_path",
    "is_edhoc_responder_context",
    "memoise_option_decoding",
    "message_interfaces",
    "release_oscore_context",
    "restarts_authenticated_session",
    "retransmission_wait",
    "serve_later_blocks_over_dtls",
    "server_socket",
    "spool_block",
    "tidy_dtls_server",
    "tinydtls_now",
    "with_shared_options",
]
