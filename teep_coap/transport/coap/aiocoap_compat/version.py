"""The aiocoap release the adaptations were written for, and the check that it is the one installed."""

from __future__ import annotations

import logging
import os

from teep_coap.errors import TeepCoapError

log = logging.getLogger("teep_coap.transport.coap")


WRITTEN_FOR = "0.4.17"  # the aiocoap release every adaptation was written for and tested with
UNCHECKED_ENV = "TEEP_COAP_AIOCOAP_UNCHECKED"  # "1": use another aiocoap release anyway


class AiocoapVersionError(TeepCoapError):
    """The installed aiocoap is not the release teep-coap's adaptations were written for."""


def check_version(installed: str, environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    """True if `installed` is WRITTEN_FOR; False (one warning) if the override is set; else raise."""
    if installed == WRITTEN_FOR:
        return True
    if environ.get(UNCHECKED_ENV) == "1":
        log.warning(
            "aiocoap %s is not %s: its internals are adapted as for %s (%s=1)",
            installed,
            WRITTEN_FOR,
            WRITTEN_FOR,
            UNCHECKED_ENV,
        )
        return False
    raise AiocoapVersionError(
        f"teep-coap needs aiocoap {WRITTEN_FOR} (installed: {installed}): install aiocoap=={WRITTEN_FOR}, "
        f"or set {UNCHECKED_ENV}=1 to try this one at your own risk"
    )
