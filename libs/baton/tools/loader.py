"""Where a service's tools come from: the tool pack beside the workflow declarations plus configured modules."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from baton.tools.packs import load_tool_pack
from baton.tools.python import PythonToolProvider
from baton.tools.registry import ToolRegistry
from baton.workflows import TOOL_PACK_FILE


def registry_for(
    workflow_dir: Path,
    *,
    pack: Path | None = None,
    modules: Sequence[str] = (),
    only: Collection[str] | None = None,
) -> ToolRegistry:
    """A registry (not started) over `pack` (default: tools.yaml in workflow_dir, if there) and Python modules;
    `only`: the tools the service calls (HTTP tools outside it are left out, with their secrets)."""
    path = pack or workflow_dir / TOOL_PACK_FILE
    if pack is not None or path.exists():
        return ToolRegistry(load_tool_pack(path).providers(modules, only=only))
    return ToolRegistry([PythonToolProvider.from_modules(modules)] if modules else [])
