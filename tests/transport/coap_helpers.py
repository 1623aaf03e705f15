"""Fixtures for transport tests: profiles with short timeouts and freshly provisioned credentials."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from teep_coap.profiles import Profile, load_profile
from teep_coap.transport.coap.credentials import DeviceCredentials, load_agent_credentials, provision_device


def quick(name: str, **limits: object) -> Profile:
    """A shipped profile with a short request timeout (tests must stay fast when things go wrong)."""
    p = load_profile(name)
    lim = dataclasses.replace(p.limits, **{"request_timeout": 5.0, **limits})  # type: ignore[arg-type]
    return dataclasses.replace(p, limits=lim)


def without_echo(profile: Profile) -> Profile:
    """The profile with RFC 9175 Echo off: for tests of what the server checks behind it, or that
    count datagrams of one exchange (test_echo.py tests Echo itself)."""
    return dataclasses.replace(profile, transport=dataclasses.replace(profile.transport, echo=False))


def without_padding(profile: Profile) -> Profile:
    """The profile whose client does not pad its connect: the TAM answers it with 4.01 + Echo first."""
    transport = dataclasses.replace(profile.transport, pad_connect_to=0)
    return dataclasses.replace(profile, transport=transport)


@dataclasses.dataclass
class Creds:
    tam_dir: Path
    agent_dir: Path
    tam_side: list[DeviceCredentials]
    agent_side: DeviceCredentials


@pytest.fixture
def creds(tmp_path: Path) -> Creds:
    tam, agent = tmp_path / "tam", tmp_path / "agent"
    d = provision_device(tam, agent, "agent-1")
    return Creds(tam, agent, [d], load_agent_credentials(agent))
