"""profiles layer (see ../shared/DESIGN.md)."""
