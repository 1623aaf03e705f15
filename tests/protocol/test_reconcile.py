"""The TAM reconciles its record with what the device reports (docs/engines.md, "Recovery after loss
and crashes"): lower than recorded, a manifest it never sent, a tc-list the evidence contradicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from teep_coap.model.teep import Update
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.protocol.broker import BrokerSession, in_memory_post, run_in_memory
from teep_coap.protocol.wire import COSE
from teep_coap.security.suit.build import build_envelope


def session(world: Any) -> BrokerSession:
    s = run_in_memory(world.agent, "coap://tam.invalid/teep", in_memory_post(world.tam))
    assert s.result is not None and s.result.ok, s.result
    return s


def envelope(world: Any, seq: int, payload: bytes) -> bytes:
    key = next(k for k in world.tam.config.keys if k.key_type == "P-256")
    cfg = world.agent.state.config
    return build_envelope(
        payload,
        key=key,
        component_id=COMPONENT_ID,
        sequence_number=seq,
        vendor_id=cfg.vendor_id,
        class_id=cfg.class_id,
    )


def publish(world: Any, seq: int) -> bytes:
    env = envelope(world, seq, f"v{seq}".encode())
    world.tam.store.add_component(
        component_id=COMPONENT_ID, sequence_number=seq, envelope=env, now=0.0, audience="all"
    )
    return env


def record(world: Any) -> int | None:
    (dev,) = world.tam.store.devices()
    (dc,) = world.tam.store.device_components(dev.id)
    return dc.installed_seq


def last_audit(world: Any, event: str) -> list[str]:
    sid = max(s[0] for s in world.tam.store.sessions())
    return [detail for _, _, ev, detail in world.tam.store.audit_log(sid) if ev == event]


def test_device_lower_than_the_record_gets_the_newest_again(tmp_path: Path) -> None:
    world = teep_world(load_profile("coap"), tmp_path, 300)
    env2 = publish(world, 2)
    session(world)
    assert record(world) == 2 and world.agent.state.components.sequence_number(COMPONENT_ID) == 2
    # the device goes back to version 1 (restored from a backup; the store itself has no rollback rule)
    env1 = world.tam.store.component_versions(COMPONENT_ID)[0].envelope
    world.agent.state.components.install(COMPONENT_ID, b"\x00" * 300, env1, 1)
    s = session(world)
    update = COSE.open(s.received[1], [k.public for k in world.tam.config.keys]).message
    assert isinstance(update, Update) and update.manifest_list == (env2,)  # its newest, nothing lower
    assert world.agent.state.components.sequence_number(COMPONENT_ID) == 2 and record(world) == 2
    (rec,) = [
        d
        for s in world.tam.store.sessions()
        for *_, ev, d in world.tam.store.audit_log(s[0])
        if ev == "reconciled" and "recorded=2" in d
    ]
    assert rec.endswith("recorded=2 device=1")


def test_a_manifest_the_tam_never_sent_is_recorded_not_acted_on(tmp_path: Path) -> None:
    world = teep_world(load_profile("coap"), tmp_path, 300)
    session(world)
    foreign = envelope(world, 7, b"from elsewhere")  # validly signed, but not in this TAM's catalog
    world.agent.state.components.install(COMPONENT_ID, b"from elsewhere", foreign, 7)
    s = session(world)
    assert len(s.received) == 1  # QueryRequest, then nothing: the TAM has nothing newer than 7
    assert record(world) == 7
    (unknown,) = last_audit(world, "unknown-manifest")
    assert unknown.endswith("seq=7")


def test_attested_digest_wins_over_the_tc_list(tmp_path: Path) -> None:
    world = teep_world(load_profile("coap"), tmp_path, 300)
    session(world)
    publish(world, 2)
    # A device whose tc-list claims 2 while its evidence shows the manifest of version 1.
    env1 = world.tam.store.component_versions(COMPONENT_ID)[0].envelope
    world.agent.state.components.install(COMPONENT_ID, b"\x00" * 300, env1, 2)
    s = run_in_memory(world.agent, "coap://tam.invalid/teep", in_memory_post(world.tam))
    assert len(s.received) == 2  # the TAM believed the evidence (1) and sent version 2
    (disagree,) = last_audit(world, "tc-list-disagrees")
    assert disagree.endswith("reported=2 attested=1")
