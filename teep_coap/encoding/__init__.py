"""encoding layer (see docs/design.md §1): TEEP <-> CBOR (normative) and the JSON twin.

from teep_coap.encoding import decode, encode      # bytes <-> TeepMessage
"""

from teep_coap.encoding.cbor_codec import decode, decode_value, encode
from teep_coap.encoding.errors import TeepDecodeError, TeepEncodeError

__all__ = ["TeepDecodeError", "TeepEncodeError", "decode", "decode_value", "encode"]
