"""`teep-coap check tam` / `check agent`: pass against our own roles, fail against broken fakes."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from typing import Any

import aiocoap
import aiocoap.resource
import cbor2
import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code
from cli_run import run_cli

from teep_coap.bench.sessions import make_world, tam_process
from teep_coap.encoding.cbor_codec import encode
from teep_coap.model.teep import QueryRequest, QueryResponse, Success
from teep_coap.profiles import load_profile
from teep_coap.profiles.check_agent import check_agent
from teep_coap.profiles.check_tam import check_tam
from teep_coap.profiles.conformance import FAIL, PASS, REGISTRY, SKIP, WARN, Report
from teep_coap.security import cose
from teep_coap.security.keys import generate_key, load_verifying_key

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


cli = functools.partial(run_cli, timeout=90)


def results(report: dict[str, Any] | Report) -> dict[str, str]:
    rows = report.to_json()["results"] if isinstance(report, Report) else report["results"]
    return {r["id"]: r["result"] for r in rows}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("check")
    return make_world(root / "tam", root / "agents", 2, 500)


@pytest.mark.parametrize("profile", ["coap", "coaps-psk", "coap-oscore", "coap-edhoc", "teep-cbor-http"])
def test_check_tam_passes_against_our_tam(profile: str, world: Any) -> None:
    with tam_process(profile, world.tam_dir) as (uri, _pid):
        done = cli(
            "check", "tam", uri, "--profile", profile, "--json", "-q",
            "--peer-key", str(world.tam_dir / "keys" / "esp256" / "public.pem"),
            "--state", str(world.agent_dirs[0]),
        )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    got = results(report)
    assert report["ok"] is True and FAIL not in got.values()
    for row in report["results"]:
        assert row["section"] == REGISTRY[row["id"]].section and row["level"] in ("MUST", "SHOULD")
    must_pass = {"teep.cose", "teep.signature", "teep.cddl", "teep.token-fresh"}
    if profile == "teep-cbor-http":
        must_pass |= {"http.connect", "http.content-type", "http.security-headers", "http.no-cache-control"}
        must_pass |= {"http.not-cbor", "http.unsigned"}
    else:
        must_pass |= {"coap.connect", "coap.content-format", "coap.wrong-content-format", "coap.not-cbor"}
        must_pass |= {"coap.unsigned", "coap.block1", "coap.block2", "coap.too-large", "coap.method"}
    assert {k: got.get(k) for k in must_pass} == dict.fromkeys(must_pass, PASS)


class _BrokenTam(aiocoap.resource.Resource):
    """A TAM that breaks the binding: Content-Format 0 on its answers, an unsigned QueryRequest with a
    token that never changes, and it takes anything (no 4.15 / 4.00)."""

    async def render_post(self, request: Message) -> Message:
        qr = encode(QueryRequest(token=bytes(16)))
        return Message(code=Code.CHANGED, payload=qr if not request.payload else b"", content_format=0)


class _StaleTam(aiocoap.resource.Resource):
    """Signed QueryRequests, right Content-Format, but always the same token."""

    def __init__(self, key: Any) -> None:
        super().__init__()
        self.message = cose.sign1(encode(QueryRequest(token=bytes(range(16)))), key)

    async def render_post(self, request: Message) -> Message:
        if request.opt.content_format not in (None, 65000):
            return Message(code=Code.UNSUPPORTED_CONTENT_FORMAT)
        if request.payload:
            return Message(code=Code.BAD_REQUEST)
        return Message(code=Code.CHANGED, payload=self.message, content_format=65000)


async def _serve_fake(resource: aiocoap.resource.Resource) -> tuple[aiocoap.Context, str]:
    import socket

    site = aiocoap.resource.Site()
    site.add_resource(["teep"], resource)
    for attempt in range(5):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a free port (aiocoap hides it)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        try:
            ctx = await aiocoap.Context.create_server_context(site, bind=("127.0.0.1", port))
        except OSError:  # another process took the port between the probe and the bind
            if attempt == 4:
                raise
            continue
        return ctx, f"coap://127.0.0.1:{port}/teep"
    raise AssertionError("unreachable")


async def test_check_tam_fails_a_broken_tam() -> None:
    ctx, uri = await _serve_fake(_BrokenTam())
    try:
        report = await check_tam(load_profile("coap"), uri, timeout=3)
    finally:
        await ctx.shutdown()
    got = results(report)
    assert report.must_failed
    for check_id in ("coap.content-format", "teep.cose", "coap.wrong-content-format", "coap.unsigned"):
        assert got[check_id] == FAIL, (check_id, report.format())
    assert got["coap.not-cbor"] == FAIL  # answered 2.04 to bytes that are no CBOR
    assert got["coap.bad-accept"] == WARN and got["coap.method"] in (PASS, WARN)
    assert got["teep.signature"] == SKIP


async def test_check_tam_names_a_stale_token() -> None:
    key = generate_key("esp256")
    ctx, uri = await _serve_fake(_StaleTam(key))
    try:
        report = await check_tam(load_profile("coap"), uri, peer_key=key.public, timeout=3)
        wrong_key = await check_tam(
            load_profile("coap"), uri, peer_key=generate_key("esp256").public, timeout=3
        )
    finally:
        await ctx.shutdown()
    got = results(report)
    assert got["teep.cose"] == PASS and got["teep.signature"] == PASS and got["teep.cddl"] == PASS
    assert got["teep.token-fresh"] == FAIL
    assert results(wrong_key)["teep.signature"] == FAIL


def test_check_tam_cli_exit_status_and_text(world: Any) -> None:
    done = cli("check", "tam", "coap://127.0.0.1:9/teep", "--timeout", "1", "-q")
    assert done.returncode == 1
    assert "FAIL MUST   coap.connect" in done.stdout
    assert "a MUST failed" in done.stdout
    bad = cli("check", "tam", "gopher://x/teep")
    assert bad.returncode == 2 and "cannot tell the profile" in bad.stderr


@pytest.mark.parametrize("profile", ["coap", "coap-oscore", "coap-edhoc", "teep-cbor-http"])
async def test_check_agent_passes_our_agent(world: Any, profile: str) -> None:
    agent_dir = world.agent_dirs[1]
    command = (
        " ".join([*CLI[:2], repr(CLI[2])])
        + f" agent run --profile {profile} --tam {{uri}} --state {agent_dir}"
    )
    report = await check_agent(
        load_profile(profile),
        world.tam_dir,
        peer_key=load_verifying_key(agent_dir / "key" / "public.pem"),
        run_command=command,
        wait=60,
    )
    got = results(report)
    assert not report.must_failed, report.format()
    assert got == {
        "agent.connect": PASS,
        "agent.block2": PASS if profile.startswith("coap") else SKIP,
        "agent.content-format": PASS,
        "teep.cose": PASS,
        "teep.signature": PASS,
        "teep.cddl": PASS,
        "teep.token-echo": PASS,
        "agent.rejects-unsigned": PASS,
    }


def test_check_agent_cli(world: Any) -> None:
    agent_dir = world.agent_dirs[1]
    run = " ".join([*CLI[:2], repr(CLI[2])]) + f" agent run --profile coap --tam {{uri}} --state {agent_dir}"
    done = cli(
        "check", "agent", "--tam-dir", str(world.tam_dir), "--run", run, "--json", "-q", "--wait", "60"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["role"] == "agent" and report["counts"]["pass"] == 7
    assert results(report)["teep.signature"] == SKIP  # no --peer-key


async def post(ctx: aiocoap.Context, **fields: Any) -> Message:
    """A POST that answers the TAM's RFC 9175 Echo challenge once, as any Broker must."""
    answer = await ctx.request(Message(code=Code.POST, **fields)).response
    if answer.code == Code.UNAUTHORIZED and answer.opt.echo:
        again = Message(code=Code.POST, **fields)
        again.opt.echo = answer.opt.echo
        answer = await ctx.request(again).response
    return answer


async def _broken_agent(uri: str) -> None:
    """Reassembles the QueryRequest, answers with a wrongly signed QueryResponse carrying another token,
    then happily answers the unsigned Update with a Success."""
    key = generate_key("esp256")
    ctx = await aiocoap.Context.create_client_context()
    try:
        first = await post(ctx, uri=uri, accept=65000)
        assert first.code == Code.CHANGED
        qresp = cose.sign1(encode(QueryResponse(token=b"not-the-token-at-all")), key)
        update = await post(ctx, uri=uri, payload=qresp, content_format=65000, accept=65000)
        if update.payload:
            success = cose.sign1(encode(Success(token=bytes(16))), key)
            await post(ctx, uri=uri, payload=success, content_format=65000, accept=65000)
    finally:
        await ctx.shutdown()


async def test_check_agent_fails_a_broken_agent(world: Any) -> None:
    tasks: list[asyncio.Task[None]] = []
    report = await check_agent(
        load_profile("coap"),
        world.tam_dir,
        peer_key=load_verifying_key(world.agent_dirs[0] / "key" / "public.pem"),  # not the fake's key
        announce=lambda uri: tasks.append(asyncio.ensure_future(_broken_agent(uri))),
        wait=20,
    )
    await asyncio.gather(*tasks)
    got = results(report)
    assert report.must_failed
    assert got["agent.block2"] == PASS and got["teep.cddl"] == PASS
    assert got["teep.signature"] == FAIL
    assert got["teep.token-echo"] == FAIL
    assert got["agent.rejects-unsigned"] == FAIL


async def test_check_agent_sees_a_wrong_content_format(world: Any) -> None:
    async def wrong_cf(uri: str) -> None:
        ctx = await aiocoap.Context.create_client_context()
        try:
            await post(ctx, uri=uri)
            await ctx.request(
                Message(code=Code.POST, uri=uri, payload=cbor2.dumps([2, {}]), content_format=60)
            ).response
        finally:
            await ctx.shutdown()

    tasks: list[asyncio.Task[None]] = []
    report = await check_agent(
        load_profile("coap"),
        world.tam_dir,
        announce=lambda uri: tasks.append(asyncio.ensure_future(wrong_cf(uri))),
        wait=3,
    )
    await asyncio.gather(*tasks)
    got = results(report)
    assert got["agent.connect"] == PASS
    assert got["agent.content-format"] == FAIL
    assert "4.15" in next(r.detail for r in report.results if r.id == "agent.content-format")


async def test_check_tam_fails_a_broken_http_tam() -> None:
    """An HTTP TAM that answers everything with 200 and an unsigned QueryRequest, with Cache-Control and
    without the binding's security headers."""
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        body = encode(QueryRequest(token=bytes(16)))
        return web.Response(
            body=body, content_type="application/teep+cbor", headers={"Cache-Control": "no-store"}
        )

    app = web.Application()
    app.router.add_route("*", "/tam", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        report = await check_tam(load_profile("teep-cbor-http"), f"http://127.0.0.1:{port}/tam", timeout=5)
    finally:
        await runner.cleanup()
    got = results(report)
    assert report.must_failed
    for check_id in (
        "http.security-headers",
        "http.no-cache-control",
        "teep.cose",
        "http.not-cbor",
        "http.unsigned",
    ):
        assert got[check_id] == FAIL, (check_id, report.format())
    assert got["http.connect"] == PASS and got["http.content-type"] == PASS
    assert got["http.method"] == WARN and got["http.wrong-content-type"] == WARN


def test_the_packaged_cddl_is_the_tested_one() -> None:
    from teep_coap.profiles.conformance import TEEP_CDDL
    from tests.conftest import CDDL_FILE

    assert TEEP_CDDL.read_text() == CDDL_FILE.read_text()


def test_teep_cddl_names_the_rule_the_validator_refuses() -> None:
    """A signed QueryResponse whose token is an integer: the CDDL validator says which rule fails."""
    from teep_coap.profiles.conformance import examine_message

    key = generate_key("esp256")
    report = Report("tam", "x", "coap")
    signed = cose.sign1(cbor2.dumps([2, {20: 5}]), key)
    assert examine_message(report, signed, 2, None) is None
    (row,) = [r for r in report.results if r.id == "teep.cddl"]
    assert row.result == FAIL
    assert "CDDL validator" in row.detail and "query-response@options" in row.detail and "bstr" in row.detail
    good = Report("tam", "x", "coap")
    examine_message(good, cose.sign1(encode(QueryResponse(token=bytes(16))), key), 2, None)
    assert [r.result for r in good.results if r.id == "teep.cddl"] == [PASS]
