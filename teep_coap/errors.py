"""Root of every error teep-coap raises on purpose.

Each layer derives its own family from `TeepCoapError`, so callers (and the CLI) can tell an expected,
named failure from a bug: the CLI prints the former in one line and exits 2.
"""


class TeepCoapError(Exception):
    """Base class of all deliberate teep-coap errors."""


class NotImplementedFeature(TeepCoapError):
    """A feature that is named in the design but not built yet; the message says which."""
