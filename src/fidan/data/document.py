"""The unit every data step passes along."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Document:
    id: str                  # unique within a run
    text: str
    source: str              # file path, "embedded", or a data set name
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: line number, language, kind ...
