"""aiocoap's internals are touched in one module only, and that module checks the aiocoap version."""

from __future__ import annotations

import ast
import logging
import socket
import struct
from pathlib import Path

import aiocoap
import aiocoap.meta
import pytest
from aiocoap.transports.udp6 import UDP6EndpointAddress

from teep_coap.transport.coap import aiocoap_compat
from teep_coap.transport.coap.aiocoap_compat import UNCHECKED_ENV, WRITTEN_FOR, AiocoapVersionError
from teep_coap.transport.coap.aiocoap_compat.addresses import _is_multicast

PACKAGE = Path(aiocoap_compat.__file__).parents[2]
COMPAT = Path(aiocoap_compat.__file__).parent  # the package
DEFINITIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def aiocoap_private_names() -> set[str]:
    """Every `_name` aiocoap defines or reads as an attribute (methods, attributes, module names)."""
    names: set[str] = set()
    for path in Path(aiocoap.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                names.add(node.attr)
            elif isinstance(node, DEFINITIONS) and _private(node.name):
                names.add(node.name)
    return names


def _imports_aiocoap(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "aiocoap" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiocoap":
            return True
    return False


def private_uses(tree: ast.Module, private: set[str]) -> list[str]:
    """aiocoap private names a module touches: `x._name` (not on self/cls of our own classes), `self._name`
    in a class derived from an aiocoap class, `from aiocoap… import _name`, `import aiocoap…._module`."""
    found: list[str] = []
    aiocoap_bases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "aiocoap":
            aiocoap_bases.update(a.asname or a.name for a in node.names)
            if any(_private(part) for part in (node.module or "").split(".")):
                found.append(f"line {node.lineno}: from {node.module} import")
            found += [f"line {node.lineno}: import {a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {a.name}"
                for a in node.names
                if a.name.startswith("aiocoap") and any(_private(p) for p in a.name.split("."))
            ]
    derived: set[int] = set()  # ids of `self`-attribute nodes inside classes derived from aiocoap's
    for cls in [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        if any(ast.unparse(b).split(".")[0] in aiocoap_bases | {"aiocoap"} for b in cls.bases):
            derived.update(id(n) for n in ast.walk(cls) if isinstance(n, ast.Attribute))
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or node.attr not in private:
            continue
        on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
        own = on_self and id(node) not in derived
        if not own:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_only_the_compat_module_touches_aiocoap_internals() -> None:
    private = aiocoap_private_names()
    assert {"_pool", "_run_retransmissions", "_recent_messages", "_options"} <= private  # the scan works
    offenders: dict[str, list[str]] = {}
    checked = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.is_relative_to(COMPAT):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if not _imports_aiocoap(tree):
            continue
        checked += 1
        uses = private_uses(tree, private)
        if uses:
            offenders[str(path.relative_to(PACKAGE))] = uses
    assert checked >= 5
    assert offenders == {}, f"aiocoap internals outside aiocoap_compat/: {offenders}"


def test_the_check_finds_private_uses() -> None:
    private = aiocoap_private_names()
    source = (
        "from aiocoap.blockwise import _extract_block_key\n"
        "import aiocoap.resource\n"
        "class S(aiocoap.resource.Site):\n"
        "    def f(self):\n"
        "        return self._resources\n"
        "def g(ctx):\n"
        "    return ctx._pool\n"
        "class Ours:\n"
        "    def h(self):\n"
        "        return self._pool\n"
    )
    uses = private_uses(ast.parse(source), private)
    assert sorted(u.split(":")[0] for u in uses) == ["line 1", "line 5", "line 7"]


def test_the_installed_aiocoap_is_the_one_the_module_was_written_for() -> None:
    assert aiocoap.meta.version == WRITTEN_FOR
    assert aiocoap_compat.check_version(WRITTEN_FOR, {}) is True


def test_another_aiocoap_version_is_refused_with_both_versions_named() -> None:
    with pytest.raises(AiocoapVersionError) as refused:
        aiocoap_compat.check_version("0.4.18", {})
    assert "0.4.18" in str(refused.value) and WRITTEN_FOR in str(refused.value)
    assert UNCHECKED_ENV in str(refused.value)


def test_the_override_goes_on_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="teep_coap.transport.coap"):
        assert aiocoap_compat.check_version("0.5.0", {UNCHECKED_ENV: "1"}) is False
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "0.5.0" in caplog.text


def test_memoised_address_text_is_what_aiocoap_computes() -> None:
    interface = type("FakeMessageInterface", (), {})()
    v4 = UDP6EndpointAddress(("::ffff:127.0.0.1", 40000, 0, 0), interface)
    v6 = UDP6EndpointAddress(("2001:db8::0:1", 5683, 0, 0), interface)
    before = (v4.hostinfo, v6.hostinfo, v4.is_multicast)
    assert aiocoap_compat.cache_address_text() is True
    assert (
        (v4.hostinfo, v6.hostinfo, v4.is_multicast) == before == ("127.0.0.1:40000", "[2001:db8::1]", False)
    )
    hits = UDP6EndpointAddress._strip_v4mapped.cache_info().hits
    assert v4.hostinfo == "127.0.0.1:40000"
    assert UDP6EndpointAddress._strip_v4mapped.cache_info().hits > hits  # parsed once, then looked up
    local = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, "::ffff:127.0.0.1"), 0)
    group = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, "ff02::fd"), 1)
    unicast = UDP6EndpointAddress(("::ffff:127.0.0.1", 40000, 0, 0), interface, pktinfo=local)
    multicast = UDP6EndpointAddress(("::ffff:127.0.0.1", 40000, 0, 0), interface, pktinfo=group)
    assert unicast.is_multicast_locally is False and unicast.as_response_address() is unicast
    assert multicast.is_multicast_locally is True and multicast.as_response_address() is not multicast
    to_group = UDP6EndpointAddress(("ff02::fd", 5683, 0, 1), interface)  # with a zone: "ff02::fd%lo"
    assert to_group.is_multicast is True and v6.is_multicast is False
    hits = _is_multicast.cache_info().hits
    assert to_group.is_multicast is True
    assert _is_multicast.cache_info().hits == hits + 1  # a client asks per request: looked up
