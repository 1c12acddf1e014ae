"""Placeholder until the tool-pack loader lands: Python modules only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from baton.tools.base import ToolProvider
from baton.tools.python import PythonToolProvider


@dataclass
class ToolPack:
    python: list[str] = field(default_factory=list)

    def providers(self, extra_python_modules: Sequence[str] = ()) -> list[ToolProvider]:
        modules = [*self.python, *extra_python_modules]
        return [PythonToolProvider.from_modules(modules)] if modules else []


def load_tool_pack(path: Path) -> ToolPack:
    data = yaml.safe_load(path.read_text()) or {}
    return ToolPack(python=list(data.get("python", [])))
