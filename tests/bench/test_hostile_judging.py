"""`bench hostile` judges a slow TAM's answer as an answer: an empty ACK announces a separate
response, and a class whose right answer is a code waits for it past the 0.5 s "quiet" of the
silent classes. A loopback UDP peer plays the slow TAM."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from teep_coap.bench.hostile_junk import CLASSES, JUNK_PORT_SPAN, _fresh_sockets, coap_datagram, send_junk

ACK, NON = 2, 1
METHOD_NOT_ALLOWED = (4 << 5) | 5


def _slow_peer(sock: socket.socket, delay: float, stop: threading.Event) -> None:
    """Answer each request with an empty ACK at once and its 4.05 `delay` seconds later."""
    pending: list[tuple[float, bytes, tuple[str, int]]] = []
    sock.settimeout(0.02)
    while not stop.is_set():
        try:
            data, addr = sock.recvfrom(2048)
        except TimeoutError:
            data = b""
        if len(data) >= 4:
            mid, token = int.from_bytes(data[2:4], "big"), data[4 : 4 + (data[0] & 0x0F)]
            sock.sendto(coap_datagram(0, mid, mtype=ACK), addr)
            late = coap_datagram(METHOD_NOT_ALLOWED, (mid + 1) & 0xFFFF, token, mtype=NON)
            pending.append((time.monotonic() + delay, late, addr))
        now = time.monotonic()
        for item in [p for p in pending if p[0] <= now]:
            sock.sendto(item[1], item[2])
            pending.remove(item)


def test_a_separate_response_after_a_stall_counts_as_the_answer() -> None:
    wrong_method = next(c for c in CLASSES if c.name == "wrong-method")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    stop = threading.Event()
    peer = threading.Thread(target=_slow_peer, args=(sock, 1.2, stop), daemon=True)
    peer.start()
    try:
        result = send_junk(sock.getsockname()[1], wrong_method, 6, time_limit=20)
    finally:
        stop.set()
        peer.join(5)
        sock.close()
    assert result.outcomes == {"4.05": 6}, result.outcomes
    assert (result.right, result.wrong) == (6, 0)


def test_junk_comes_from_ports_no_client_gets() -> None:
    """Junk source ports lie below the kernel's ephemeral range, from which every real client (the
    sessions `bench hostile` runs between classes, whose addresses pass the Echo check) gets its
    port: a junk datagram is never judged as coming from a proven address."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
        target.bind(("127.0.0.1", 0))
        socks, sel = _fresh_sockets(target.getsockname()[1], 2 * 50)
        try:
            ports = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                sel.unregister(s)
                s.close()
            sel.close()
    assert len(set(ports)) == 100
    assert all(low - JUNK_PORT_SPAN <= p < low for p in ports)
