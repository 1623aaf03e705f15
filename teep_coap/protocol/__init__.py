"""protocol layer (see ../shared/DESIGN.md)."""
