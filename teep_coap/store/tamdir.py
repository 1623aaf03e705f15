"""A TAM folder as made by `teep-coap tam init`: configuration, signing keys, database.

DIR/tam.toml          configuration (database URL, attestation model, token lifetime, policy file,
                      how long ended sessions are kept: keep-history)
DIR/keys/<alg>/       one signing key per cipher suite (esp256, ed25519), every format
DIR/verifiers/        passport model: public keys of trusted Verifiers
DIR/tam.sqlite        the default database (any SQLAlchemy URL may be configured instead)
DIR/stateless.key     32 random bytes (mode 0600): MAC key of the tokens of unauthenticated peers,
                      made on first load; `stateless-connect = false` in tam.toml turns them off
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import tomllib
from pathlib import Path
from typing import Any

from teep_coap.protocol import attestation as att
from teep_coap.protocol.errors import ConfigError
from teep_coap.protocol.policy import Policy
from teep_coap.protocol.retention import parse_duration
from teep_coap.protocol.tam import Clock, Rng, TamConfig, TamEngine
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import generate_key, load_signing_key, write_key_files
from teep_coap.security.truststore import TrustStore
from teep_coap.store.tam_db import TamStore

CONFIG_FILE = "tam.toml"
ALG_NAMES = ("esp256", "ed25519")
_KEYS = {
    "database",
    "attestation",
    "token-lifetime",
    "max-outstanding-per-device",
    "data-items",
    "policy",
    "token-with-attestation",
    "strict-transport-identity",
    "evidence-max-age",
    "algs",
    "stateless-connect",
    "keep-history",
}
SECRET_FILE = "stateless.key"  # the MAC key of self-authenticating tokens (protocol.stateless), 0600


def init_tam_dir(
    folder: Path,
    *,
    algs: tuple[str, ...] = ALG_NAMES,
    database: str | None = None,
    attestation: str = att.BACKGROUND_CHECK,
    policy: str | None = None,
) -> dict[str, Any]:
    """Create keys, configuration and an empty database; returns a summary (kids per alg)."""
    if (folder / CONFIG_FILE).exists():
        raise ConfigError(f"{folder} already holds a TAM ({CONFIG_FILE} exists)")
    if attestation not in att.MODELS:
        raise ConfigError(f"attestation must be one of {att.MODELS}")
    bad = [a for a in algs if a not in ALG_NAMES]
    if bad or not algs:
        raise ConfigError(f"algs must be among {ALG_NAMES}, got {list(algs)}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        kids = {}
        for alg in algs:
            key = generate_key(alg)
            write_key_files(key, folder / "keys" / alg)
            kids[alg] = key.kid.hex()
        (folder / "verifiers").mkdir(exist_ok=True)
    except SecurityError as exc:
        raise ConfigError(f"cannot create TAM keys: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create TAM folder {folder}: {exc.strerror or exc}") from exc
    lines = [
        "# TAM configuration (teep-coap)",
        f"database = {json.dumps(database or 'sqlite:///tam.sqlite')}  # relative sqlite paths: this folder",
        f"algs = {json.dumps(list(algs))}",
        f"attestation = {json.dumps(attestation)}  # none | background-check | passport",
        "token-lifetime = 21600.0  # seconds an outstanding request stays valid",
        "max-outstanding-per-device = 4",
        "data-items = 3  # bits: 1 attestation, 2 trusted-components, 4 extensions, 8 suit-reports",
        "evidence-max-age = 300.0",
        "token-with-attestation = false",
        "strict-transport-identity = false",
        '# keep-history = "90d"  # prune ended sessions and their audit rows older than this (default: keep)',
    ]
    if policy:
        lines.append(f"policy = {json.dumps(policy)}")
    (folder / CONFIG_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    store = open_store(folder, read_config(folder))
    store.close()
    return {"dir": str(folder), "kids": kids}


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{folder} is not a TAM folder ({CONFIG_FILE} missing; run `teep-coap tam init`)"
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    extra = set(data) - _KEYS
    if extra:
        raise ConfigError(f"{path}: unknown keys {sorted(extra)}")
    return data


def database_url(folder: Path, cfg: dict[str, Any]) -> str:
    url = str(cfg.get("database", "sqlite:///tam.sqlite"))
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != "sqlite://":
        url = prefix + str((folder / url[len(prefix) :]).resolve())
    return url


def open_store(folder: Path, cfg: dict[str, Any]) -> TamStore:
    return TamStore(database_url(folder, cfg))


def stateless_secret(folder: Path) -> bytes:
    """The TAM's token secret: read DIR/stateless.key, or create it (32 random bytes, mode 0600 from
    the start). Written to a temporary file and hard-linked into place, so two TAM processes starting
    together agree on one complete secret. Every TAM process sharing the database must use it."""
    path = folder / SECRET_FILE
    if not path.exists():
        tmp = folder / f".{SECRET_FILE}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(os.urandom(32))
            with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
                os.link(tmp, path)
        except OSError as exc:
            raise ConfigError(f"cannot create {path}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
    try:
        secret = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    if len(secret) < 16:
        raise ConfigError(f"{path} holds {len(secret)} bytes; delete it to have a new 32-byte secret made")
    return secret


def load_tam_dir(folder: Path) -> tuple[TamConfig, TamStore]:
    cfg = read_config(folder)
    where = str(folder / CONFIG_FILE)
    try:
        keys = tuple(
            load_signing_key(folder / "keys" / alg / "private.pem") for alg in cfg.get("algs", ALG_NAMES)
        )
        verifiers = (
            tuple(TrustStore.from_dir(folder / "verifiers")) if (folder / "verifiers").is_dir() else ()
        )
    except SecurityError as exc:
        raise ConfigError(f"TAM folder {folder}: {exc}") from exc
    keep_history = None
    if "keep-history" in cfg:
        keep_history = parse_duration(cfg["keep-history"], f"{where}: keep-history")
    policy = None
    if cfg.get("policy"):
        policy = Policy.load(folder / str(cfg["policy"]))
    try:
        config = TamConfig(
            keys=keys,
            attestation=str(cfg.get("attestation", att.BACKGROUND_CHECK)),
            token_lifetime=float(cfg.get("token-lifetime", 21600.0)),
            max_outstanding_per_device=int(cfg.get("max-outstanding-per-device", 4)),
            data_items=int(cfg.get("data-items", 3)),
            evidence_max_age=float(cfg.get("evidence-max-age", 300.0)),
            token_with_attestation=bool(cfg.get("token-with-attestation", False)),
            strict_transport_identity=bool(cfg.get("strict-transport-identity", False)),
            verifier_keys=verifiers,
            policy=policy,
            stateless_secret=stateless_secret(folder) if cfg.get("stateless-connect", True) else None,
            keep_history=keep_history,
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: invalid value ({exc})") from exc
    return config, open_store(folder, cfg)


def load_tam(folder: str | os.PathLike[str], *, clock: Clock = time.time, rng: Rng = os.urandom) -> TamEngine:
    """A TamEngine from a folder made by `teep-coap tam init`, on its configured database."""
    config, store = load_tam_dir(Path(folder))
    return TamEngine(config, store, clock=clock, rng=rng)
