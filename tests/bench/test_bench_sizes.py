"""The size report: real sessions through counting relays on loopback, checked for consistency."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from teep_coap.bench import sizes as bs
from teep_coap.bench.wire import C2S, S2C, WireUnit, dtls_records, handshake_records, tls_records
from teep_coap.profiles import load_profile
from teep_coap.protocol.stateless import TOKEN_SIZE


def rec(ct: int, length: int, *, dtls: bool = False) -> bytes:
    if dtls:
        return bytes([ct, 0xFE, 0xFD]) + b"\0\0" + b"\0" * 6 + length.to_bytes(2, "big") + b"x" * length
    return bytes([ct, 3, 3]) + length.to_bytes(2, "big") + b"x" * length


def test_dtls_records_split_datagrams_and_types() -> None:
    wire = [
        WireUnit(C2S, rec(22, 40, dtls=True)),
        WireUnit(S2C, rec(22, 30, dtls=True) + rec(20, 1, dtls=True) + rec(22, 20, dtls=True)),
        WireUnit(C2S, rec(23, 100, dtls=True)),
        WireUnit(S2C, b"\x17\xfe"),  # truncated: still counted
    ]
    records = dtls_records(wire)
    assert [r.content_type for r in records] == [22, 22, 20, 22, 23, 0]
    assert sum(r.size for r in records) == sum(len(u.data) for u in wire)
    setup, app = handshake_records(records, tls=False)
    assert [r.content_type for r in app] == [23]
    assert len(setup) == 5


def test_tls13_handshake_recognised_by_causality() -> None:
    """Client: CH, (CCS), Finished(23), request(23); server: SH, CCS, flight(23s), then the response."""
    wire = [
        WireUnit(C2S, rec(22, 500)),
        WireUnit(S2C, rec(22, 90) + rec(20, 1) + rec(23, 800)),
        WireUnit(C2S, rec(20, 1) + rec(23, 53) + rec(23, 200)[:100]),  # Finished + half a request
        WireUnit(C2S, rec(23, 200)[100:]),
        WireUnit(S2C, rec(23, 400)),
    ]
    records = tls_records(wire)
    setup, app = handshake_records(records, tls=True)
    assert sum(r.size for r in setup) == 505 + 95 + 6 + 805 + 6 + 58
    assert [(r.direction, r.size) for r in app] == [(C2S, 205), (S2C, 405)]


def test_tls12_application_records_are_all_data() -> None:
    wire = [
        WireUnit(C2S, rec(22, 200)),
        WireUnit(S2C, rec(22, 900)),
        WireUnit(C2S, rec(20, 1) + rec(22, 40)),
        WireUnit(S2C, rec(20, 1) + rec(22, 40)),
        WireUnit(C2S, rec(23, 300)),
        WireUnit(S2C, rec(23, 50)),
    ]
    setup, app = handshake_records(tls_records(wire), tls=True)
    assert len(app) == 2 and len(setup) == 6


@pytest.fixture(scope="module")
def report() -> bs.SizesReport:
    profiles = [load_profile(n) for n in ("coap", "coaps-psk")]
    return bs.run(profiles, [20, 2048], keep_going=False)


def session(report: bs.SizesReport, profile: str, size: int) -> dict[str, int]:
    return {
        r.layer: r.bytes
        for r in report.records
        if r.profile == profile and r.payload_size == size and r.message == bs.SESSION
    }


def test_layers_add_up_to_what_the_relay_counted(report: bs.SizesReport) -> None:
    assert not report.failures
    assert len(report.sessions) == 4
    for s in report.sessions:
        layers = session(report, s.profile, s.payload_size)
        assert set(layers) == set(bs.LAYERS)
        assert sum(layers.values()) == s.wire_bytes
        per_message = sum(
            r.bytes
            for r in report.records
            if r.profile == s.profile and r.payload_size == s.payload_size and r.message != bs.SESSION
        )
        assert per_message == s.wire_bytes
        assert s.messages == ["start", "QueryRequest", "QueryResponse", "Update", "Success", "end"]
        assert s.exchanges == 3


def test_bigger_payload_means_more_bytes_and_the_payload_is_in_the_update(report: bs.SizesReport) -> None:
    for profile in ("coap", "coaps-psk"):
        small, big = session(report, profile, 20), session(report, profile, 2048)
        assert sum(big.values()) > sum(small.values())
        assert big["message"] - small["message"] >= 2048 - 20
        update = [
            r.bytes
            for r in report.records
            if r.profile == profile
            and r.payload_size == 2048
            and r.message == "Update"
            and r.layer == "message"
        ]
        assert update and update[0] > 2048


def test_dtls_costs_bytes_and_plain_coap_has_no_security_layers(report: bs.SizesReport) -> None:
    for size in (20, 2048):
        coap, coaps = session(report, "coap", size), session(report, "coaps-psk", size)
        assert sum(coaps.values()) > sum(coap.values())
        assert coap["security"] == 0 and coap["handshake"] == 0
        assert coaps["handshake"] > 0 and coaps["security"] > 0
        # the same messages and the same CoAP framing underneath: only the DTLS layers differ. (Framing
        # is equal unless a loaded machine made the TAM slower than aiocoap's 0.1 s EMPTY_ACK_DELAY in
        # one run: then an empty ACK and a separate response add a few bytes there.)
        # Plain CoAP's device has no transport identity, so its QueryRequest carries the TAM's
        # 29-byte self-authenticating token (protocol.stateless) besides the challenge, and the
        # QueryResponse echoes it: 2 x (label 1 + head 2 + 29) bytes more than over coaps, where the
        # DTLS identity authenticates the device and the request is stored.
        assert coap["message"] - coaps["message"] == 2 * (1 + 2 + TOKEN_SIZE)
        assert abs(coaps["framing"] - coap["framing"]) <= 64
    by = {(s.profile, s.payload_size): s for s in report.sessions}
    assert by[("coaps-psk", 2048)].units > by[("coap", 2048)].units  # handshake flights, blocks


def test_https_and_json_bindings(tmp_path: Path) -> None:
    rep = bs.run([load_profile("teep-cbor-https"), load_profile("teep-json-http")], [20], keep_going=False)
    https, json_http = session(rep, "teep-cbor-https", 20), session(rep, "teep-json-http", 20)
    assert https["handshake"] > 500 and https["security"] > 0
    assert json_http["security"] == 0 and json_http["handshake"] == 0
    assert json_http["message"] > https["message"]  # JSON twin is bigger than CBOR
    assert json_http["signature"] > https["signature"]  # base64url payload + JWS members vs COSE
    paths = bs.write_outputs(rep, tmp_path)
    names = {p.name for p in paths}
    assert {
        "sizes.md",
        "sizes.csv",
        "sizes.json",
        "sizes-layers.png",
        "sizes-overhead.png",
    } <= names
    assert "sizes-vs-payload.png" not in names  # one payload size: no line from a single point
    data = json.loads((tmp_path / "sizes.json").read_text())
    assert set(data["records"][0]) == {"profile", "payload_size", "message", "layer", "bytes"}
    text = (tmp_path / "sizes.csv").read_text()
    assert text.startswith("# teep-coap ")  # provenance comment line
    rows = list(csv.DictReader(io.StringIO(text.split("\n", 1)[1])))
    assert len(rows) == len(data["records"])
    assert (tmp_path / "sizes-layers.png").read_bytes()[:4] == b"\x89PNG"
    assert "teep-cbor-https" in (tmp_path / "sizes.md").read_text()


def test_cli_bench_sizes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from teep_coap.cli import root

    result = CliRunner().invoke(
        root, ["bench", "sizes", "--profiles", "coap", "--payload-sizes", "20", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    assert "coap" in result.output
    records = json.loads((tmp_path / "sizes.json").read_text())["records"]
    assert {r["message"] for r in records} >= {"session", "Update"}
    bad = CliRunner().invoke(root, ["bench", "sizes", "--payload-sizes", "x"])
    assert bad.exit_code != 0


def test_edhoc_handshake_is_counted_next_to_oscore_and_dtls() -> None:
    """coap-edhoc = coap-oscore's messages plus an EDHOC handshake (message_1/2 exchange, message_3
    in front of the first OSCORE request): that handshake is the only layer the two differ in."""
    names = ("coap-oscore", "coap-edhoc", "coaps-psk")
    rep = bs.run([load_profile(n) for n in names], [20], keep_going=False)
    assert not rep.failures
    oscore, edhoc, dtls = (session(rep, n, 20) for n in names)
    assert oscore["handshake"] == 0
    # message_1 (>= 37 B with suite 2), message_2 (>= 45 B), message_3 (>= 19 B), each in a CoAP datagram
    assert edhoc["handshake"] >= 37 + 45 + 19
    assert (edhoc["message"], edhoc["signature"]) == (oscore["message"], oscore["signature"])
    assert sum(edhoc.values()) - edhoc["handshake"] == pytest.approx(sum(oscore.values()), abs=64)
    assert dtls["handshake"] > edhoc["handshake"] > 0
    turns = {s.profile: s.round_trips for s in rep.sessions}
    # the TAM's 4.01 + Echo to message_1 (RFC 9175), then message_1/message_2: once per session
    assert turns["coap-edhoc"] == turns["coap-oscore"] + 2
