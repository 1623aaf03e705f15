"""bench layer (see docs/design.md §1)."""
