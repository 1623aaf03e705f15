"""RFC 7252 §4.8 transmission parameters and the block size of a profile, as aiocoap wants them.

aiocoap reads retransmission and block-size settings from a per-message `TransportTuning` object, so
one subclass is built per profile and attached to every request this binding sends.
"""

from __future__ import annotations

from aiocoap.numbers.constants import TransportTuning

from teep_coap.transport.coap.options import CoapOptions


def tuning_for(profile: CoapOptions) -> TransportTuning:
    """A TransportTuning with the profile's ACK_TIMEOUT, ACK_RANDOM_FACTOR, MAX_RETRANSMIT and SZX."""
    r = profile.retransmission

    class ProfileTuning(TransportTuning):
        ACK_TIMEOUT = r.ack_timeout
        ACK_RANDOM_FACTOR = r.ack_random_factor
        MAX_RETRANSMIT = r.max_retransmit
        DEFAULT_BLOCK_SIZE_EXP = profile.transport.block_szx

    ProfileTuning.__name__ = f"Tuning[{profile.name}]"
    return ProfileTuning()
