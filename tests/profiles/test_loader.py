"""The profile loader reads every shipped profile and refuses bad ones with a named reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import teep_coap
from teep_coap.profiles import ProfileError, list_profiles, load_profile, profile_from_dict, profiles_dir
from teep_coap.profiles.loader import PROFILES_ENV

BASE = {"name": "t", "transport": {"scheme": "coap"}}


def test_shipped_profiles_load() -> None:
    names = {p.name for p in list_profiles()}
    assert {"coap", "coaps-psk", "coap-oscore", "coap-constrained"} <= names


def test_shipped_profiles_are_package_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Found inside the installed package (so a wheel has them), not in a folder of the checkout."""
    monkeypatch.delenv(PROFILES_ENV, raising=False)
    folder = profiles_dir()
    assert folder.parent == Path(teep_coap.__file__).parent / "profiles"
    assert load_profile("coaps-psk").source == str(folder / "coaps-psk.toml")


def test_profiles_folder_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "only.toml").write_text('[transport]\nscheme = "coap"\n')
    monkeypatch.setenv(PROFILES_ENV, str(tmp_path))
    assert [p.name for p in list_profiles()] == ["only"]
    with pytest.raises(ProfileError, match=r"unknown profile 'coaps-psk' \(known: only\)"):
        load_profile("coaps-psk")


def test_coaps_psk_values() -> None:
    p = load_profile("coaps-psk")
    assert p.transport.scheme == "coaps"
    assert p.security.mode == "dtls-psk"
    assert p.transport.content_format == 65000
    assert p.transport.block_size == 1024 and p.transport.block_szx == 6
    assert p.media_type == "application/teep+cbor"


def test_constrained_is_constrained() -> None:
    p = load_profile("coap-constrained")
    d = load_profile("coap")
    assert p.transport.block_size == 64 and p.transport.block_szx == 2
    assert p.retransmission.max_transmit_wait < d.retransmission.max_transmit_wait


def test_load_by_path(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text('[transport]\nscheme = "coap+oscore"\nblock_size = 256\n')
    p = load_profile(f)
    assert p.name == "mine" and p.security.mode == "oscore" and p.transport.block_size == 256


def test_unknown_profile_names_known_ones() -> None:
    with pytest.raises(ProfileError, match=r"unknown profile 'nope'.*coaps-psk"):
        load_profile("nope")


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"colour": "red"}, "unknown key 'colour'"),
        ({"transport": {"scheme": "coap", "blocksize": 64}}, "unknown key 'blocksize'"),
        ({"transport": {"scheme": "gopher"}}, "scheme = 'gopher'"),
        ({"transport": {"scheme": "coap", "block_size": 100}}, "block_size = 100"),
        ({"transport": {"scheme": "coap", "content_format": 70000}}, "content_format"),
        ({"transport": {"scheme": "coap", "pad_connect_to": 2000}}, r"pad_connect_to = 2000 is out of range"),
        ({"transport": {"scheme": "coap", "path": "teep"}}, "path must start"),
        ({"transport": {"scheme": "http", "path": "/health/"}}, "is the TAM's health path"),
        ({"transport": {"scheme": "coaps"}, "security": {"mode": "none"}}, "does not fit scheme"),
        ({"protocol": "tls"}, "protocol = 'tls'"),
        ({"limits": {"request_timeout": "fast"}}, "request_timeout must be"),
        ({"limits": {"max_concurrent_requests": True}}, "max_concurrent_requests must be int"),
        ({"retransmission": {"max_retransmit": 99}}, "max_retransmit"),
        ({"transport": {}}, "scheme is required"),
        (
            {"transport": {"scheme": "coaps"}, "security": {"dtls_cipher_suite": "TLS_NULL"}},
            "dtls_cipher_suite",
        ),
    ],
)
def test_bad_values_are_named(patch: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_dict({**BASE, **patch})


def test_bad_toml(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("name = \n")
    with pytest.raises(ProfileError, match="not valid TOML"):
        load_profile(f)
