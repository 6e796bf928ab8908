"""Helpers shared by tests: known-answer vector files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).parent / "vectors"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """The ``vectors`` list of a JSON file under tests/vectors/."""
    data = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    vectors: list[dict[str, Any]] = data["vectors"]
    return vectors
