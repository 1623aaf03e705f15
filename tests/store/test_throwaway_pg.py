"""The throwaway PostgreSQL server over its Unix-domain socket: a TAM store works through that URL as
through the TCP one (the TAM on the database's host; docs/scale.md, "TAM store per session")."""

from __future__ import annotations

import pytest

from teep_coap.store.tam_db import TamStore
from teep_coap.store.throwaway_pg import postgres_binaries, throwaway_postgres


def test_store_over_the_unix_socket_url() -> None:
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with throwaway_postgres(durable=False, unix_socket=True) as url:
        assert "127.0.0.1" not in url and "?host=/" in url
        store = TamStore(url)
        try:
            dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0, psk_identity="d1")
            sid = store.start_session(2.0, device_id=dev.id, transport_identity="d1")
            assert store.spend_token(b"t" * 32, 9.0) and not store.spend_token(b"t" * 32, 9.0)
            assert store.end_session(sid, 3.0, "success") == 2.0
            found = store.device_by_transport_identity("d1")
            assert found is not None and found.id == dev.id
            raw = store._connection().connection.dbapi_connection
            assert raw is not None and raw.info.host.startswith("/")  # a socket directory, not TCP
        finally:
            store.close()
