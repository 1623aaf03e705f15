"""A measuring probe, not a server to run: the TAM engine behind libcoap's C CoAP + DTLS stack.

    python scripts/libcoap_probe/serve.py TAMDIR PORT STATSFILE   (compare.py starts it)

It answers the coaps-psk TEEP path of a TAM folder through libcoap 4.3.1 with OpenSSL's DTLS (Debian's
libcoap3, loaded with ctypes), to measure what the TAM's CPU per session would be with a CoAP/DTLS
stack in C instead of aiocoap + tinydtls (docs/scale.md, session 18). First stdout line: "TAM serving
URI", as `tam serve` prints it; on SIGTERM it writes its engine's CPU and calls to STATSFILE.

Each POST to /teep gets libcoap's empty ACK at once and its answer as a separate response once the
request's batch is committed (libcoap's async API), so requests share commits as in `tam serve`
(PROBE_SYNC=1: one engine call and commit per request, answered in the ACK). Block-wise transfers,
the PSK look-up by identity and the DTLS records are libcoap's. What a real front end would need and
this has not: a cache of answers for retransmitted requests (libcoap keeps none), session and
handshake limits, 5.03 when overloaded, credentials reloads, the wrong-PSK diagnosis, a hardening
review. It serves loopback only and measures; nothing in teep_coap imports it.
"""

import ctypes as C
import json
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from teep_coap.profiles import load_profile
from teep_coap.protocol.events import reply_of
from teep_coap.protocol.tam import TamEngine, TamRequest
from teep_coap.store.tamdir import load_tam_dir
from teep_coap.transport.coap.credentials import load_tam_credentials

# libcoap 4.3.1's C declarations (include/coap3/*.h) that this probe uses
COAP_DTLS_SPSK_SETUP_VERSION = 1
COAP_PROTO_DTLS = 2
COAP_REQUEST_POST = 2
COAP_BLOCK_USE_LIBCOAP, COAP_BLOCK_SINGLE_BODY = 0x01, 0x02
COAP_IO_NO_WAIT = 0xFFFFFFFF
CHANGED, BAD_REQUEST, SERVICE_UNAVAILABLE = 0x44, 0x80, 0xA3  # 2.04, 4.00, 5.03
BATCH_DELAY = 0.002  # seconds to wait for more requests before a commit, as `tam serve` does
FULL_ENOUGH, MAX_BATCH = 8, 32


class Bin(C.Structure):  # coap_bin_const_t
    _fields_ = [("length", C.c_size_t), ("s", C.c_void_p)]


class SpskInfo(C.Structure):  # coap_dtls_spsk_info_t
    _fields_ = [("hint", Bin), ("key", Bin)]


ID_CALLBACK = C.CFUNCTYPE(C.c_void_p, C.POINTER(Bin), C.c_void_p, C.c_void_p)
HANDLER = C.CFUNCTYPE(None, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p, C.c_void_p)
RELEASE = C.CFUNCTYPE(None, C.c_void_p, C.c_void_p)


class Spsk(C.Structure):  # coap_dtls_spsk_t
    _fields_ = [
        ("version", C.c_uint8),
        ("reserved", C.c_uint8 * 7),
        ("validate_id_call_back", ID_CALLBACK),
        ("id_call_back_arg", C.c_void_p),
        ("validate_sni_call_back", C.c_void_p),
        ("sni_call_back_arg", C.c_void_p),
        ("psk_info", SpskInfo),
    ]


class Address(C.Structure):  # coap_address_t on Linux: socklen_t size + the sockaddr union
    _fields_ = [("size", C.c_uint32), ("addr", C.c_uint8 * 28)]


def load_libcoap() -> Any:
    lib = C.CDLL("libcoap-3-openssl.so.3")
    p, u = C.c_void_p, C.c_size_t
    for name, restype, argtypes in [
        ("coap_new_context", p, [p]),
        ("coap_context_set_psk2", C.c_int, [p, C.POINTER(Spsk)]),
        ("coap_new_endpoint", p, [p, C.POINTER(Address), C.c_int]),
        ("coap_new_str_const", p, [C.c_char_p, u]),
        ("coap_resource_init", p, [p, C.c_int]),
        ("coap_register_request_handler", None, [p, C.c_int, HANDLER]),
        ("coap_add_resource", None, [p, p]),
        ("coap_context_set_block_mode", None, [p, C.c_uint8]),
        ("coap_io_process", C.c_int, [p, C.c_uint32]),
        ("coap_get_data_large", C.c_int, [p, C.POINTER(u), C.POINTER(p), C.POINTER(u), C.POINTER(u)]),
        ("coap_session_get_psk_identity", C.POINTER(Bin), [p]),
        ("coap_pdu_set_code", None, [p, C.c_int]),
        ("coap_pdu_get_token", Bin, [p]),
        ("coap_add_data_large_response", C.c_int,
         [p, p, p, p, p, C.c_uint16, C.c_int, C.c_uint64, u, p, RELEASE, p]),
        ("coap_find_async", p, [p, Bin]),
        ("coap_register_async", p, [p, p, C.c_uint64]),
        ("coap_async_trigger", None, [p]),
        ("coap_set_log_level", None, [C.c_int]),
        ("coap_dtls_set_log_level", None, [C.c_int]),
    ]:  # fmt: skip
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def main() -> None:
    tam_dir, port, stats_file = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    batched = os.environ.get("PROBE_SYNC") != "1"
    lib = load_libcoap()
    content_format = load_profile("coaps-psk").transport.content_format
    config, store = load_tam_dir(tam_dir)
    tam = TamEngine(config, store)
    keys: dict[bytes, tuple[Bin, Any]] = {}  # identity -> (coap_bin_const_t, the buffer it points to)
    for device in load_tam_credentials(tam_dir):
        buf = C.create_string_buffer(device.psk, len(device.psk))
        keys[device.psk_identity.encode()] = (Bin(len(device.psk), C.cast(buf, C.c_void_p)), buf)
    held: dict[int, Any] = {}  # answers libcoap sends block by block, until it releases them
    pending: list[tuple[int, TamRequest]] = []  # (async, request) waiting for the next batch
    outcomes: dict[int, Any] = {}  # async -> its request's outcome, until its handler runs again
    engine = {"cpu": 0.0, "calls": 0}

    def run_engine(requests: list[TamRequest]) -> list[Any]:
        start = time.thread_time()
        if requests[0].now >= tam.next_timer():
            tam.handle_timer(requests[0].now)
        done = tam.handle_batch(requests)
        engine["cpu"] += time.thread_time() - start
        engine["calls"] += len(requests)
        return list(done)

    @ID_CALLBACK
    def on_identity(identity: Any, _session: Any, _arg: Any) -> int | None:
        found = keys.get(C.string_at(identity.contents.s, identity.contents.length))
        return None if found is None else C.addressof(found[0])

    @RELEASE
    def release(_session: Any, app_ptr: int | None) -> None:
        held.pop(app_ptr or 0, None)

    @HANDLER
    def on_post(resource: Any, session: Any, request: Any, _query: Any, response: Any) -> None:
        if batched:
            waiting = lib.coap_find_async(session, lib.coap_pdu_get_token(request))
            if waiting:  # the second call, after its batch: answer
                if waiting not in outcomes:  # a retransmission while it waits: another empty ACK
                    return
                answer(resource, session, request, response, outcomes.pop(waiting))
                return
        n, data, offset, total = C.c_size_t(), C.c_void_p(), C.c_size_t(), C.c_size_t()
        has = lib.coap_get_data_large(request, C.byref(n), C.byref(data), C.byref(offset), C.byref(total))
        payload = C.string_at(data, n.value) if has and n.value else b""
        ident = lib.coap_session_get_psk_identity(session)
        identity = C.string_at(ident.contents.s, ident.contents.length).decode() if ident else None
        tam_request = TamRequest(payload, time.time(), identity)
        if not batched:
            answer(resource, session, request, response, run_engine([tam_request])[0])
            return
        waiting = lib.coap_register_async(session, request, 0)
        if not waiting:
            lib.coap_pdu_set_code(response, SERVICE_UNAVAILABLE)
            return
        pending.append((waiting, tam_request))  # no code set: libcoap sends the empty ACK

    def answer(resource: Any, session: Any, request: Any, response: Any, outcome: Any) -> None:
        if isinstance(outcome, Exception):
            lib.coap_pdu_set_code(response, BAD_REQUEST)
            return
        lib.coap_pdu_set_code(response, CHANGED)
        reply = reply_of(outcome)
        if reply:
            buf = C.create_string_buffer(reply, len(reply))
            held[id(buf)] = buf
            lib.coap_add_data_large_response(
                resource, session, request, response, None, content_format, -1, 0,
                len(reply), C.cast(buf, C.c_void_p), release, id(buf),
            )  # fmt: skip

    def flush() -> None:
        batch = pending[:MAX_BATCH]
        del pending[:MAX_BATCH]
        for (waiting, _), outcome in zip(batch, run_engine([r for _, r in batch]), strict=True):
            outcomes[waiting] = outcome
            lib.coap_async_trigger(waiting)

    lib.coap_startup()
    lib.coap_set_log_level(0)
    lib.coap_dtls_set_log_level(0)
    ctx = lib.coap_new_context(None)
    lib.coap_context_set_block_mode(ctx, COAP_BLOCK_USE_LIBCOAP | COAP_BLOCK_SINGLE_BODY)
    setup = Spsk(version=COAP_DTLS_SPSK_SETUP_VERSION)
    setup.validate_id_call_back = on_identity
    if lib.coap_context_set_psk2(ctx, C.byref(setup)) != 1:
        sys.exit("probe: coap_context_set_psk2 failed")
    address = Address(size=16)  # sockaddr_in, 127.0.0.1:port
    raw = struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton("127.0.0.1")
    C.memmove(address.addr, raw, len(raw))
    if not lib.coap_new_endpoint(ctx, C.byref(address), COAP_PROTO_DTLS):
        sys.exit(f"probe: cannot listen on 127.0.0.1:{port}")
    path = b"teep"
    resource = lib.coap_resource_init(lib.coap_new_str_const(path, len(path)), 0)
    lib.coap_register_request_handler(resource, COAP_REQUEST_POST, on_post)
    lib.coap_add_resource(ctx, resource)

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    print(f"TAM serving coaps://127.0.0.1:{port}/teep", flush=True)
    while not stop:
        lib.coap_io_process(ctx, 100)
        if pending:
            deadline = time.monotonic() + BATCH_DELAY
            while len(pending) < FULL_ENOUGH and time.monotonic() < deadline:
                lib.coap_io_process(ctx, 1)
            while pending:
                flush()
            lib.coap_io_process(ctx, COAP_IO_NO_WAIT)  # the triggered answers go out now
    cpu = os.times()
    stats = {"process_cpu": cpu.user + cpu.system, **{f"engine_{k}": v for k, v in engine.items()}}
    stats_file.write_text(json.dumps(stats))


if __name__ == "__main__":
    main()
