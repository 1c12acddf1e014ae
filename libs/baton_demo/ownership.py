"""The demo's ownership hook (tenants.yaml `ownership_hook`): the reference world says whose record an id is."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from baton_demo.world import OWNED_ARGUMENTS, World

_OPEN: dict[Path, World] = {}


def world_owner(argument: str, value: Any) -> str | None:
    """The tenant owning the world's row `argument=value` names (customer_id, ticket_id), None when there is no
    such row; KeyError for any other argument. The world is the one at BATON_WORLD_DB (default .baton/world.db)."""
    if argument not in OWNED_ARGUMENTS:
        raise KeyError(argument)
    path = Path(os.environ.get("BATON_WORLD_DB", ".baton/world.db"))
    world = _OPEN.get(path)
    if world is None:
        if not path.exists():
            # No world, so no record: nothing named can be another tenant's (and no file is created here).
            return None
        world = _OPEN[path] = World(path)
    return world.tenant_of(argument, value)
