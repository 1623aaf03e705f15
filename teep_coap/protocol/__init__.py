"""protocol layer (see docs/design.md §1)."""
