"""security layer (see ../shared/DESIGN.md)."""
