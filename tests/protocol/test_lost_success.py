"""A lost Success must not strand a device: the scripted flow of the CLI, with the Success never
delivered, then the next session (issue: "A lost Success strands a device forever").

Before the fix the TAM kept believing sequence 1, sent the Update to 2 again, and the Agent refused it
as a rollback forever. Now the device's tc-list (with tc-manifest-sequence-number) is the truth the TAM
reconciles with, and the same Update delivered twice is one install and two Successes.
"""

from __future__ import annotations

from pathlib import Path

from tests.protocol.test_cli import folders, out  # noqa: F401 - `folders` is a fixture

ID = "dev1"


def _session_to_update(d: Path, tag: str) -> dict[str, object]:
    """connect → QueryRequest → QueryResponse → TAM's answer (written to {tag}-3.cbor)."""
    out(
        "tam",
        "process",
        "--dir",
        "tam",
        "--connect",
        "--transport-identity",
        ID,
        "-o",
        f"{tag}-1.cbor",
        cwd=d,
    )
    out("agent", "process", "--state", "agent", f"{tag}-1.cbor", "-o", f"{tag}-2.cbor", cwd=d)
    answer: dict[str, object] = out(
        "tam",
        "process",
        "--dir",
        "tam",
        f"{tag}-2.cbor",
        "--transport-identity",
        ID,
        "-o",
        f"{tag}-3.cbor",
        cwd=d,
    )
    return answer


def test_lost_success_is_reconciled_and_the_same_update_is_idempotent(folders: Path) -> None:  # noqa: F811
    d = folders
    out("tam", "component", "add", "--dir", "tam", "ta1.suit", "--audience", "all", cwd=d)
    assert _session_to_update(d, "a")["response"]["message"]["type"] == 3  # type: ignore[index]
    out("agent", "process", "--state", "agent", "a-3.cbor", "-o", "a-4.cbor", cwd=d)
    assert out("tam", "process", "--dir", "tam", "a-4.cbor", cwd=d) == {"response": None}

    # The Update to 2 is applied, and its Success is never delivered: the TAM still records 1.
    out("tam", "component", "add", "--dir", "tam", "ta2.suit", "--audience", "all", cwd=d)
    upd = _session_to_update(d, "b")
    assert upd["response"]["message"]["type"] == 3  # type: ignore[index]
    s = out("agent", "process", "--state", "agent", "b-3.cbor", "-o", "b-4.cbor", cwd=d)
    assert s["response"]["message"]["type"] == 5 and s["note"] == "Update applied"
    installed_at = out("agent", "status", "--state", "agent", cwd=d)["installed"]

    # Case 4 of the issue: the same Update again (a retransmitted or replayed one) is "already
    # installed": Success, and the store is not touched.
    again = out("agent", "process", "--state", "agent", "b-3.cbor", "-o", "b-4bis.cbor", cwd=d)
    assert again["response"]["message"]["type"] == 5, again
    assert "already installed" in again["note"]
    assert out("agent", "status", "--state", "agent", cwd=d)["installed"] == installed_at

    # The next session: the QueryResponse reports sequence 2, the TAM (which recorded 1: the audit says
    # so) reconciles and has nothing to send.
    assert _session_to_update(d, "c") == {"response": None}
    devices = out("tam", "device", "list", "--dir", "tam", cwd=d)
    assert devices[0]["components"][0]["installed_seq"] == 2
    last = max(out("tam", "sessions", "--dir", "tam", "--audit", cwd=d), key=lambda s: s["id"])
    assert last["outcome"] == "up-to-date", last
    (rec,) = [a for a in last["audit"] if a["event"] == "reconciled"]
    assert rec["detail"].endswith("recorded=1 device=2"), rec
