"""A running TAM picks up `teep-coap tam credentials` without a restart.

`tam serve` checks TAMDIR/credentials.toml every WATCH_INTERVAL seconds (its modification time and
size) and on SIGHUP, and hands the devices it now lists to the server (`CoapServer.update_devices`).
A file that does not parse (e.g. caught half-written) is reported and the devices served so far stay
in force until the next change.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

from teep_coap.transport.coap.credentials import TAM_CREDENTIALS_FILE, CredentialsError, load_tam_credentials

log = logging.getLogger("teep_coap.transport.coap.server")

WATCH_INTERVAL = 1.0  # seconds between two looks at credentials.toml


class CredentialsWatcher:
    """Reloads a TAM folder's credentials.toml into a server when the file changes."""

    def __init__(self, server: Any, tam_dir: str | os.PathLike[str]) -> None:
        self._server = server
        self._path = Path(tam_dir) / TAM_CREDENTIALS_FILE
        self._seen = self._stamp()
        self.reloads = 0  # successful reloads that changed something

    def _stamp(self) -> tuple[int, int] | None:
        try:
            st = self._path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def check(self, *, force: bool = False) -> bool:
        """Reload if the file changed (or `force`); True if the served devices changed."""
        stamp = self._stamp()
        if stamp == self._seen and not force:
            return False
        try:
            devices = load_tam_credentials(self._path.parent)
        except CredentialsError as exc:
            log.warning("credentials not reloaded (the devices served so far stay): %s", exc)
            return False
        self._seen = stamp
        added, removed = self._server.update_devices(devices)
        if added or removed:
            self.reloads += 1
            log.info(
                "credentials reloaded from %s: %d added or changed, %d removed", self._path, added, removed
            )
        return bool(added or removed)

    async def run(self, interval: float = WATCH_INTERVAL) -> None:
        """Check every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            self.check()


__all__ = ["WATCH_INTERVAL", "CredentialsWatcher"]
