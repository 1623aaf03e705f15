"""OTrP (draft-ietf-teep-opentrustprotocol-03) beside TEEP: its own model, encodings, security and engines.

The package mirrors teep_coap's layers inside itself (model → encoding → security → protocol →
profiles) and may import teep_coap's lower layers; nothing on the TEEP path imports it
(tests/layering checks both). Why a package: docs/design.md.
"""
