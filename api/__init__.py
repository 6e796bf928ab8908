"""FastAPI control plane of a PEC node."""
