"""CLI commands of this area; see `teep_coap.cli.groups` for the groups they attach to."""
