"""The TAM against an attacker's inputs: CPU before authentication, answers and logs for junk, memory.

In process: every path that touches a peer's bytes before the signature is checked (COSE peek and
open, the protected header, OTrP CBOR, JWS JSON) refuses the costliest CBOR/JSON we can build at well
under 10 ms of CPU per KiB (a 1 MiB tag-30 rational cost cbor2 15 s, i.e. 15 ms/KiB, before the gate).
Over real sockets, against `teep-coap tam serve` in its own process: the same for a 1 MiB body sent
block-wise, junk datagrams get the right CoAP answer or silence and no traceback, and the TAM's memory
levels off under 20,000 junk datagrams from fresh source ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest

from teep_coap.bench.hostile_junk import CLASSES, costly_cbor, send_junk
from teep_coap.bench.hostile_tam import TamUnderTest, _post_blockwise, rss_bytes, tam_with_log
from teep_coap.bench.sessions import _cpu_seconds, make_world
from teep_coap.encoding.errors import TeepDecodeError, TooDeep, UnsupportedValue
from teep_coap.encoding.untrusted import check_untrusted_cbor, loads_untrusted_json
from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.model import OtrpDecodeError
from teep_coap.protocol.wire import COSE, JOSE, NotSigned
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import generate_key
from teep_coap.transport.junklog import JunkLogLimit

MS_PER_KIB = 10.0  # the target for the worst input
SIZE = 1_040_000  # just under the coap profile's 1 MiB message limit
BIG = (1 << (8 * 511 * 1024)) - 1


def _nasty_inputs() -> list[tuple[str, bytes]]:
    named = list(
        zip(
            ("rational", "decimal", "bignum", "cose-rational", "deep", "many", "lie", "shared", "floats"),
            costly_cbor(SIZE),
            strict=True,
        )
    )
    protected = cbor2.dumps(cbor2.CBORTag(30, [BIG, BIG - 2]))
    named.append(("rational-in-protected-bstr", cbor2.dumps(cbor2.CBORTag(18, [protected, {}, b"", b""]))))
    named.append(("bignum-kid", cbor2.dumps(cbor2.CBORTag(18, [b"", {4: BIG}, b"", b""]))))
    return named


@pytest.mark.parametrize("name,data", _nasty_inputs(), ids=lambda v: v if isinstance(v, str) else "")
def test_worst_cbor_costs_little_before_the_signature_check(name: str, data: bytes) -> None:
    key = generate_key(-9).public
    gc.collect()  # the previous case's garbage is not this one's cost
    t0 = time.process_time()
    with pytest.raises(NotSigned):
        COSE.peek(data)  # what the TAM runs first: kid and alg, to find the device's key
    with pytest.raises((SecurityError, TeepDecodeError)):
        COSE.open(data, [key])  # the COSE structure is parsed before the signature check
    with contextlib.suppress(OtrpDecodeError):  # plain items (the "many" input) are well-formed OTrP CBOR
        otrp_cbor.loads(data, "message")
    ms_per_kib = (time.process_time() - t0) * 1000 / max(len(data) / 1024, 1.0)  # tiny inputs: per 1 KiB
    assert ms_per_kib < MS_PER_KIB, f"{name}: {ms_per_kib:.2f} ms per KiB"


def test_the_gate_refuses_what_teep_cannot_contain_and_passes_cose() -> None:
    for data, error in [
        (cbor2.dumps(cbor2.CBORTag(2, b"\x01" * 9)), UnsupportedValue),
        (cbor2.dumps(cbor2.CBORTag(30, [1, 3])), UnsupportedValue),
        (cbor2.dumps([1.5]), UnsupportedValue),
        (b"\xf7", UnsupportedValue),  # undefined
        (b"\x81" * 17 + b"\x00", TooDeep),
        (b"\x9f\xff", TeepDecodeError),  # indefinite length
        (b"\x5a\xff\xff\xff\xff", TeepDecodeError),  # length beyond the input
        (b"\x00\x00", TeepDecodeError),  # trailing byte
    ]:
        with pytest.raises(error):
            check_untrusted_cbor(data)
    key = generate_key(-9)
    from teep_coap.security import cose

    check_untrusted_cbor(cose.sign1(b"\x83\x01\xa0\x00", key))
    check_untrusted_cbor(cose.sign(b"\x83\x01\xa0\x00", [key, generate_key(-19)]))


def test_jws_json_refuses_floats_huge_integers_and_deep_nesting_cheaply() -> None:
    with pytest.raises(NotSigned):
        JOSE.peek(b"{}")  # imports done before the clock runs
    floats = b'{"payload": [' + b"1.5," * 50_000 + b"1]}"
    for text in (floats, b'{"payload": ' + b"9" * 4000 + b"}", b"[" * 200_000):
        t0 = time.process_time()
        with pytest.raises(TeepDecodeError):
            loads_untrusted_json(text)
        with pytest.raises(NotSigned):
            JOSE.peek(text)
        assert (time.process_time() - t0) * 1000 / (len(text) / 1024) < MS_PER_KIB


def test_junk_log_limit_keeps_one_line_and_a_burst() -> None:
    now = [0.0]
    limit = JunkLogLimit(burst=3, window=60, clock=lambda: now[0])
    logger = logging.getLogger("coap-server")
    records = []
    for _ in range(100):
        try:
            raise ValueError("bad option")
        except ValueError as exc:
            record = logger.makeRecord(
                "coap-server",
                logging.ERROR,
                __file__,
                1,
                "render failed",
                (),
                (type(exc), exc, exc.__traceback__),
            )
        if limit.filter(record):
            records.append(record)
    assert len(records) == 3
    assert records[0].exc_info is None and "ValueError: bad option" in records[0].getMessage()
    now[0] = 61.0
    late = logger.makeRecord("coap-server", logging.ERROR, __file__, 1, "render failed", (), None)
    assert limit.filter(late) and "97 similar lines suppressed" in late.getMessage()
    ours = logging.getLogger("teep_coap.protocol.tam").makeRecord(
        "teep_coap.protocol.tam", logging.INFO, __file__, 1, "session done", (), None
    )
    assert all(limit.filter(ours) for _ in range(10))  # not junk: never limited


# ------------------------------------------------------------------------------ over real sockets


@pytest.fixture(scope="module")
def tam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TamUnderTest]:
    root = tmp_path_factory.mktemp("hostile")
    world = make_world(root / "tam", root / "agents", 1, 64)
    # without Echo: an attacker who answers the Echo from its own address reaches the same code
    with tam_with_log("coap-no-echo", world.tam_dir, Path(root / "tam.log")) as server:
        yield server


def test_a_1mib_rational_sent_blockwise_costs_the_tam_little(tam: TamUnderTest) -> None:
    payload = costly_cbor(SIZE)[0]
    cpu0 = _cpu_seconds(tam.proc.pid)
    code = asyncio.run(_post_blockwise(tam.uri, payload, timeout=120))
    cpu1 = _cpu_seconds(tam.proc.pid)
    assert code == "4.00"
    assert cpu0 is not None and cpu1 is not None
    assert (cpu1 - cpu0) * 1000 / (len(payload) / 1024) < MS_PER_KIB
    assert tam.alive


def test_junk_gets_the_right_answer_and_no_traceback(tam: TamUnderTest) -> None:
    by_name = {c.name: c for c in CLASSES}
    for name in ("bad-options", "block1-gap", "garbage-cbor", "costly-cbor", "wrong-method", "later-block"):
        result = send_junk(tam.port, by_name[name], 60, time_limit=60, quiet=0.2)
        assert result.wrong == 0, (name, result.outcomes)
        assert tam.alive
    assert "Traceback" not in tam.log_text()


def test_memory_and_log_level_off_under_20000_junk_datagrams(tam: TamUnderTest) -> None:
    by_name = {c.name: c for c in CLASSES}
    mix = [by_name[n] for n in ("block1-abandoned", "garbage-cbor", "wrong-format", "fake-cose")]
    log0 = tam.log_bytes()
    samples = []
    sent = 0
    for round_ in range(5):  # 5 rounds x 4 classes x 1,000 datagrams, each batch from fresh ports
        for junk in mix:
            sent += send_junk(tam.port, junk, 1000, seed=round_, time_limit=60).datagrams
        samples.append(rss_bytes(tam.proc.pid) or 0)
    assert sent >= 19_000 and tam.alive
    growth_late = samples[-1] - samples[1]  # after the caches filled up
    assert growth_late < 8 * 2**20, [s // 2**20 for s in samples]
    assert tam.log_bytes() - log0 < 100_000
    assert "Traceback" not in tam.log_text()
