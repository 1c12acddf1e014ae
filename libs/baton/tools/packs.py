"""The tool pack: one YAML file beside the workflow declarations saying where tools come from.

    python: [invoice_tools]                  # modules of @python_tool functions
    http:                                    # endpoints, declared here (see baton.tools.http.HttpToolConfig)
      - {name: check_purchase_order, version: "1", url: http://127.0.0.1:8765/check, tier: READ, ...}
    mcp:                                     # MCP servers (see baton.tools.mcp.McpServerConfig)
      - {server: payments, transport: stdio, command: python, args: [-m, payments_server], version: "1"}

A relative `cwd` of an MCP server resolves against the pack file's directory, which is also its default.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from baton.tools.base import ToolError, ToolProvider
from baton.tools.http import HttpToolConfig, HttpToolProvider
from baton.tools.mcp import McpServerConfig, McpToolProvider
from baton.tools.python import PythonToolProvider


class ToolPackError(ToolError):
    """A tool pack file that cannot be used; the message names the file and the field."""

    def __init__(self, message: str) -> None:
        super().__init__("BAD_TOOL_PACK", message)


def _repeated(names: Sequence[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


class ToolPack(BaseModel):
    """Where a project's tools come from: Python modules, HTTP endpoints, MCP servers."""

    model_config = ConfigDict(extra="forbid")

    python: list[str] = Field(default_factory=list)
    http: list[HttpToolConfig] = Field(default_factory=list)
    mcp: list[McpServerConfig] = Field(default_factory=list)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)
    _source: str = PrivateAttr(default="tool pack")

    @model_validator(mode="after")
    def _unique_names(self) -> ToolPack:
        if twice := _repeated([t.name for t in self.http]):
            raise ValueError(f"two HTTP tools share a name: {twice}; a workflow must know which one it calls")
        if twice := _repeated([s.server for s in self.mcp]):
            raise ValueError(f"two MCP servers share a name: {twice}; rename one")
        return self

    def providers(
        self, extra_python_modules: Sequence[str] = (), *, only: Collection[str] | None = None
    ) -> list[ToolProvider]:
        """One provider per source: the pack's Python modules plus `extra_python_modules`, its HTTP tools, and
        each MCP server (with its cwd resolved against the pack's directory). None is started. `only`: the tools a
        service calls: HTTP tools outside it are left out with their secrets, and so is an MCP server whose
        `tools:` list names none of them."""
        found: list[ToolProvider] = []
        modules = list(dict.fromkeys([*self.python, *extra_python_modules]))
        if modules:
            found.append(PythonToolProvider.from_modules(modules))
        http = [t for t in self.http if only is None or t.name in only]
        if http:
            found.append(HttpToolProvider(http, name=f"http:{self._source}"))
        for server in self.mcp:
            if only is not None and server.tools is not None and not set(server.tools) & set(only):
                continue  # none of its tools is called here: the server is not started
            if server.transport == "stdio":
                server = server.model_copy(update={"cwd": str(self._base_dir / (server.cwd or "."))})
            found.append(McpToolProvider(server))
        return found


def _where(loc: Sequence[int | str]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "(the whole file)"


def parse_tool_pack(text: str, *, source: str = "tool pack", base_dir: Path | None = None) -> ToolPack:
    """A tool pack from YAML text; ToolPackError naming `source` and each field that is wrong."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ToolPackError(f"{source} is not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ToolPackError(f"{source} must be a mapping with keys python, http and mcp, not a {type(data).__name__}")
    try:
        pack = ToolPack.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ToolPackError(f"{source} is not a valid tool pack: {problems}") from exc
    pack._source = source
    pack._base_dir = base_dir if base_dir is not None else Path.cwd()
    return pack


def load_tool_pack(path: str | Path) -> ToolPack:
    """Read and check a tool pack file (`tools.yaml`)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolPackError(f"cannot read tool pack {file}: {exc.strerror or exc}; check the path") from exc
    return parse_tool_pack(text, source=str(file), base_dir=file.resolve().parent)
