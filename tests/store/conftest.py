"""The TAM store on both of its databases: a fresh SQLite file, and a fresh database on the session's
throwaway PostgreSQL server (`new_pg_database` in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from teep_coap.store.tam_db import TamStore


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The SQLAlchemy URL of an empty TAM database, once per database kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tam.sqlite'}"
    return str(request.getfixturevalue("new_pg_database")(request.node.module.__name__.rsplit(".", 1)[-1]))


@pytest.fixture
def store(url: str) -> Iterator[TamStore]:
    """A `TamStore` on `url`, closed after the test."""
    s = TamStore(url)
    yield s
    s.close()
