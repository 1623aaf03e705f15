"""Find, read and check profile files (`teep_coap/profiles/builtin/*.toml`, docs/profiles.md).

The shipped profiles are package data (so a wheel finds them by name with no checkout beside it);
`TEEP_COAP_PROFILES` (a folder) replaces them. A profile is named by its file name without `.toml`,
or given as a path to any TOML file.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from teep_coap.encoding.liberal import COMPAT_MODES
from teep_coap.profiles.schema import (
    BLOCK_SIZES,
    DTLS_CIPHER_SUITES,
    ENCODINGS,
    PROTOCOLS,
    SCHEME_SECURITY,
    SCHEME_SECURITY_ALLOWED,
    SCHEMES,
    SECURITY_MODES,
    TABLE_KEYS,
    TOP_KEYS,
    Limits,
    Profile,
    ProfileError,
    Retransmission,
    SecuritySettings,
    TransportSettings,
)
from teep_coap.transport.health import HEALTH_PATH

PROFILES_ENV = "TEEP_COAP_PROFILES"
MAX_CONNECT_PADDING = 1024  # bytes: a padded connect must still fit one datagram (RFC 7252 §4.6)


def profiles_dir() -> Path:
    """The folder that holds the named profiles: `TEEP_COAP_PROFILES`, else the package's own."""
    env = os.environ.get(PROFILES_ENV)
    if env:
        return Path(env)
    shipped = resources.files("teep_coap.profiles").joinpath("builtin")
    if not isinstance(shipped, Path):  # a zipped install: the loader reads files, so say so plainly
        raise ProfileError(f"shipped profiles are not on the file system ({shipped}); set {PROFILES_ENV}")
    return shipped


def list_profiles() -> list[Profile]:
    """Every profile of the profiles folder, sorted by name (a broken file raises ProfileError)."""
    folder = profiles_dir()
    if not folder.is_dir():
        raise ProfileError(f"profiles folder not found: {folder} (set {PROFILES_ENV})")
    return [load_profile(path) for path in sorted(folder.glob("*.toml"))]


def profile_names() -> list[str]:
    """Names of the profiles in the profiles folder, without reading them."""
    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def load_profile(name_or_path: str | os.PathLike[str]) -> Profile:
    """Load a profile by name (`coaps-psk`) or path (`./my.toml`) and check every key and value."""
    text = str(name_or_path)
    path = Path(text)
    if not (text.endswith(".toml") or os.sep in text or path.is_file()):
        path = profiles_dir() / f"{text}.toml"
        if not path.is_file():
            known = ", ".join(profile_names()) or "none"
            raise ProfileError(f"unknown profile {text!r} (known: {known})")
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(f"{path}: not valid TOML: {exc}") from None
    return profile_from_dict(data, source=str(path), default_name=path.stem)


def _check_keys(where: str, table: dict[str, Any], allowed: dict[str, Any]) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise ProfileError(f"{where}: unknown key {key!r} (allowed: {', '.join(allowed)})")
        want = allowed[key]
        if (isinstance(value, bool) and want is not bool) or not isinstance(value, want):
            names = " or ".join(t.__name__ for t in want) if isinstance(want, tuple) else want.__name__
            raise ProfileError(f"{where}: {key} must be {names}, got {value!r}")


def _choice(where: str, key: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ProfileError(f"{where}: {key} = {value!r} is not one of {', '.join(allowed)}")
    return value


def _range(where: str, key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ProfileError(f"{where}: {key} = {value!r} is out of range {low}..{high}")


def profile_from_dict(data: dict[str, Any], source: str = "<dict>", default_name: str = "") -> Profile:
    """Build a Profile from parsed TOML, refusing unknown keys and values out of range."""
    where = source
    _check_keys(where, data, TOP_KEYS)
    for table in TABLE_KEYS:
        _check_keys(f"{where} [{table}]", data.get(table, {}), TABLE_KEYS[table])
    if "transport" not in data or "scheme" not in data["transport"]:
        raise ProfileError(f"{where}: [transport] scheme is required")

    name = data.get("name", default_name)
    if not name:
        raise ProfileError(f"{where}: name is required")
    protocol = _choice(where, "protocol", data.get("protocol", "teep"), PROTOCOLS)
    encoding = _choice(where, "encoding", data.get("encoding", "cbor"), ENCODINGS)

    t = data["transport"]
    scheme = _choice(f"{where} [transport]", "scheme", t["scheme"], SCHEMES)
    path = t.get("path", "/teep")
    if not path.startswith("/"):
        raise ProfileError(f"{where} [transport]: path must start with '/', got {path!r}")
    if [p for p in path.split("/") if p] == [p for p in HEALTH_PATH.split("/") if p]:
        raise ProfileError(
            f"{where} [transport]: path {path!r} is the TAM's health path (GET {HEALTH_PATH}); choose another"
        )
    content_format = t.get("content_format", TransportSettings.content_format)
    _range(f"{where} [transport]", "content_format", content_format, 0, 65535)
    block_size = t.get("block_size", TransportSettings.block_size)
    if block_size not in BLOCK_SIZES:
        raise ProfileError(
            f"{where} [transport]: block_size = {block_size} is not one of {', '.join(map(str, BLOCK_SIZES))}"
        )
    pad_connect_to = t.get("pad_connect_to", TransportSettings.pad_connect_to)
    _range(f"{where} [transport]", "pad_connect_to", pad_connect_to, 0, MAX_CONNECT_PADDING)
    transport = TransportSettings(
        scheme=scheme,
        path=path,
        content_format=content_format,
        media_type=t.get("media_type", ""),
        block_size=block_size,
        echo=t.get("echo", True),
        pad_connect_to=pad_connect_to,
    )

    s = data.get("security", {})
    mode = _choice(f"{where} [security]", "mode", s.get("mode", SCHEME_SECURITY[scheme]), SECURITY_MODES)
    if mode not in SCHEME_SECURITY_ALLOWED[scheme]:
        raise ProfileError(
            f"{where} [security]: mode {mode!r} does not fit scheme {scheme!r} "
            f"(needs {' or '.join(repr(m) for m in SCHEME_SECURITY_ALLOWED[scheme])})"
        )
    security = SecuritySettings(mode=mode, **{k: v for k, v in s.items() if k != "mode"})
    if mode == "dtls-psk" and security.dtls_cipher_suite not in DTLS_CIPHER_SUITES:
        raise ProfileError(
            f"{where} [security]: dtls_cipher_suite {security.dtls_cipher_suite!r} is not one of "
            f"{', '.join(DTLS_CIPHER_SUITES)} (the suites tinydtls speaks)"
        )

    lim = data.get("limits", {})
    limits = Limits(**lim)
    _range(f"{where} [limits]", "max_message_size", limits.max_message_size, 64, 64 * 1024 * 1024)
    _range(f"{where} [limits]", "request_timeout", limits.request_timeout, 0.05, 3600)
    _range(f"{where} [limits]", "max_concurrent_requests", limits.max_concurrent_requests, 1, 100_000)
    _range(f"{where} [limits]", "overload_max_age", limits.overload_max_age, 0, 3600)
    _range(f"{where} [limits]", "max_session_rounds", limits.max_session_rounds, 1, 1000)
    _range(f"{where} [limits]", "idle_timeout", limits.idle_timeout, 0.05, 86400)
    _range(f"{where} [limits]", "handshake_timeout", limits.handshake_timeout, 0.05, 3600)
    limits = Limits(
        **{
            **lim,
            "request_timeout": float(limits.request_timeout),
            "idle_timeout": float(limits.idle_timeout),
            "handshake_timeout": float(limits.handshake_timeout),
        }
    )

    r = data.get("retransmission", {})
    retrans = Retransmission(
        ack_timeout=float(r.get("ack_timeout", Retransmission.ack_timeout)),
        ack_random_factor=float(r.get("ack_random_factor", Retransmission.ack_random_factor)),
        max_retransmit=r.get("max_retransmit", Retransmission.max_retransmit),
    )
    _range(f"{where} [retransmission]", "ack_timeout", retrans.ack_timeout, 0.01, 60)
    _range(f"{where} [retransmission]", "ack_random_factor", retrans.ack_random_factor, 1.0, 4.0)
    _range(f"{where} [retransmission]", "max_retransmit", retrans.max_retransmit, 0, 20)

    compat = data.get("compat", "")
    if compat not in COMPAT_MODES:
        raise ProfileError(
            f"{where}: compat = {compat!r} is not one of {', '.join(repr(m) for m in COMPAT_MODES)}"
        )
    if compat and (protocol != "teep" or encoding != "cbor"):
        raise ProfileError(f"{where}: compat = {compat!r} applies to TEEP with CBOR encoding only")

    return Profile(
        name=name,
        description=data.get("description", ""),
        protocol=protocol,
        encoding=encoding,
        transport=transport,
        security=security,
        limits=limits,
        retransmission=retrans,
        source=source,
        compat=compat,
    )
