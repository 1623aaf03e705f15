"""encoding layer (see ../shared/DESIGN.md)."""
