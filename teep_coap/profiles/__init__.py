"""Profiles: one TOML file per binding (protocol × encoding × transport × security × limits).

`load_profile(name_or_path)` and `list_profiles()` read the shipped
`builtin/*.toml` (package data) or any TOML path (see docs/profiles.md);
the transport stacks and the session runner that a profile assembles live in `stack` and `session`.
"""

from teep_coap.profiles.loader import (
    list_profiles,
    load_profile,
    profile_from_dict,
    profile_names,
    profiles_dir,
)
from teep_coap.profiles.schema import (
    Limits,
    Profile,
    ProfileError,
    Retransmission,
    SecuritySettings,
    TransportSettings,
)

__all__ = [
    "Limits",
    "Profile",
    "ProfileError",
    "Retransmission",
    "SecuritySettings",
    "TransportSettings",
    "list_profiles",
    "load_profile",
    "profile_from_dict",
    "profile_names",
    "profiles_dir",
]
