"""The tool pack file: what it accepts, the providers it builds, and errors that name the file and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from baton.contracts.models import PermissionTier
from baton.tools import PythonToolProvider, ToolError
from baton.tools.http import EnvSecret, HttpToolProvider
from baton.tools.mcp import McpToolProvider
from baton.tools.packs import ToolPackError, load_tool_pack, parse_tool_pack

EXAMPLE = """\
# tools.yaml beside the workflow declarations
python: [invoice_tools]
http:
  - name: check_purchase_order
    version: "1"
    description: Compare an invoice with its purchase order.
    url: http://127.0.0.1:8765/check
    tier: READ
    idempotent: true
    timeout_s: 5
    max_result_bytes: 16384
    parameters: {type: object, properties: {po_number: {type: string}}, required: [po_number]}
    returns: {type: object}
    auth: {header: Authorization, secret_env: ACME_PO_TOKEN, prefix: "Bearer "}
mcp:
  - server: payments
    transport: stdio
    command: python
    args: [-m, payments_server]
    cwd: servers
    env: {PAYMENTS_MODE: test, PAYMENTS_TOKEN: {secret_env: ACME_PAY_TOKEN}}
    version: "1"
    idempotent: [pay_invoice]
    timeout_s: 10
    timeouts: {settle_batch: 120}
  - server: ledger
    transport: streamable-http
    url: http://127.0.0.1:8766/mcp
    headers: {X-Api-Key: {secret_env: ACME_LEDGER_KEY}}
"""

INVOICE_TOOLS = """\
from baton.tools import python_tool


@python_tool(version="1", tier="READ", idempotent=True)
def lookup_invoice(invoice_id: str) -> dict[str, str]:
    \"\"\"Look an invoice up.\"\"\"
    return {"invoice_id": invoice_id}
"""

EXTRA_TOOLS = """\
from baton.tools import python_tool


@python_tool(version="2", tier="WRITE")
def approve_invoice(invoice_id: str) -> dict[str, str]:
    \"\"\"Approve an invoice.\"\"\"
    return {"approved": invoice_id}
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with the example pack and two tool modules on the path."""
    (tmp_path / "invoice_tools.py").write_text(INVOICE_TOOLS)
    (tmp_path / "extra_tools.py").write_text(EXTRA_TOOLS)
    (tmp_path / "tools.yaml").write_text(EXAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def write_pack(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tools.yaml"
    path.write_text(textwrap.dedent(text))
    return path


async def test_the_example_pack_parses_into_typed_sources(project: Path) -> None:
    pack = load_tool_pack(project / "tools.yaml")
    assert pack.python == ["invoice_tools"]
    (po,) = pack.http
    assert (po.name, po.version, po.tier, po.idempotent, po.timeout_s) == (
        "check_purchase_order",
        "1",
        PermissionTier.READ,
        True,
        5,
    )
    assert po.auth is not None and (po.auth.header, po.auth.secret_env, po.auth.prefix) == (
        "Authorization",
        "ACME_PO_TOKEN",
        "Bearer ",
    )
    payments, ledger = pack.mcp
    assert (payments.transport, payments.command, payments.args) == ("stdio", "python", ["-m", "payments_server"])
    assert payments.env == {"PAYMENTS_MODE": "test", "PAYMENTS_TOKEN": EnvSecret(secret_env="ACME_PAY_TOKEN")}
    assert payments.idempotent == ["pay_invoice"]
    assert (payments.timeout_s, payments.timeouts) == (10, {"settle_batch": 120})
    assert (ledger.transport, ledger.url, ledger.version) == ("streamable-http", "http://127.0.0.1:8766/mcp", None)


async def test_providers_cover_every_source_plus_extra_python_modules(project: Path) -> None:
    pack = load_tool_pack(project / "tools.yaml")
    python, http, payments, ledger = pack.providers(extra_python_modules=["extra_tools", "invoice_tools"])
    assert isinstance(python, PythonToolProvider)
    assert [d.name for d in await python.declarations()] == ["lookup_invoice", "approve_invoice"]
    assert isinstance(http, HttpToolProvider)
    assert [d.ref for d in await http.declarations()] == ["check_purchase_order@1"]
    assert isinstance(payments, McpToolProvider) and isinstance(ledger, McpToolProvider)
    # A relative cwd resolves against the pack file's directory, not the process's.
    assert payments.config.cwd == str(project / "servers")
    assert ledger.config.cwd is None


async def test_a_service_gets_only_the_http_tools_and_mcp_servers_it_calls(project: Path) -> None:
    text = (project / "tools.yaml").read_text().replace("    idempotent: [pay_invoice]\n", "    tools: [pay_invoice]\n")
    (project / "tools.yaml").write_text(text)
    pack = load_tool_pack(project / "tools.yaml")
    # An agent calling only lookup_invoice: no HTTP tool (no secret needed), no payments server started; the
    # ledger server lists no `tools:`, so which of its tools are called is only known once it is asked.
    python, ledger = pack.providers(only={"lookup_invoice"})
    assert isinstance(python, PythonToolProvider)
    assert isinstance(ledger, McpToolProvider) and ledger.config.server == "ledger"
    kinds = [type(p).__name__ for p in pack.providers(only={"pay_invoice", "check_purchase_order"})]
    assert kinds == ["PythonToolProvider", "HttpToolProvider", "McpToolProvider", "McpToolProvider"]


async def test_a_stdio_server_without_cwd_runs_in_the_pack_directory(tmp_path: Path) -> None:
    path = write_pack(tmp_path, "mcp: [{server: s, command: python}]")
    (server,) = load_tool_pack(path).providers()
    assert isinstance(server, McpToolProvider) and server.config.cwd == str(tmp_path)


async def test_an_empty_pack_has_no_providers(tmp_path: Path) -> None:
    assert load_tool_pack(write_pack(tmp_path, "# nothing yet\n")).providers() == []


async def test_numbers_are_accepted_as_versions(tmp_path: Path) -> None:
    pack = load_tool_pack(write_pack(tmp_path, "http: [{name: t, version: 1, url: 'http://h/t'}]"))
    assert pack.http[0].version == "1"


async def test_a_missing_secret_fails_the_start_naming_the_variable(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACME_PO_TOKEN", raising=False)
    monkeypatch.delenv("ACME_PAY_TOKEN", raising=False)
    _, http, payments, _ = load_tool_pack(project / "tools.yaml").providers()
    for provider, variable in ((http, "ACME_PO_TOKEN"), (payments, "ACME_PAY_TOKEN")):
        with pytest.raises(ToolError) as caught:  # before anything connects or is spawned
            await provider.start()
        assert caught.value.code == "MISSING_SECRET"
        assert variable in str(caught.value)
        await provider.close()


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("pyhton: [invoice_tools]", "pyhton", "Extra inputs are not permitted"),
        ("http: [{name: t, version: '1'}]", "http[0].url", "Field required"),
        ("http: [{name: t, version: '1', url: 'ftp://h/t'}]", "http[0].url", "not an http:// or https:// URL"),
        ("http: [{name: t, version: '1', url: 'http://h/t', timeout_s: 0}]", "http[0].timeout_s", "greater than 0"),
        ("http: [{name: t, version: '1', url: 'http://h/t', tier: ROOT}]", "http[0].tier", "READ"),
        ("http: [{name: t, version: '1', url: 'http://h/t', method: GET}]", "http[0].method", "POST"),
        ("http: [{name: t, version: '1', url: 'http://h/t', auth: {header: X}}]", "http[0].auth.secret_env", "Field"),
        ("http: [{name: t, version: '1', url: 'http://h/t', retries: 3}]", "http[0].retries", "Extra inputs"),
        ("mcp: [{server: s, transport: stdio}]", "mcp[0]", "transport stdio needs a command"),
        ("mcp: [{server: s, transport: streamable-http}]", "mcp[0]", "needs an http(s) url"),
        ("mcp: [{server: s, transport: streamable-http, url: 'http://h', args: [x]}]", "mcp[0]", "for transport stdio"),
        ("mcp: [{server: s, command: x, url: 'http://h/mcp'}]", "mcp[0]", "for transport streamable-http"),
        ("mcp: [{server: s, transport: sse, url: 'http://h/mcp'}]", "mcp[0].transport", "stdio"),
        ("mcp: [{server: s, command: x, idempotent: pay}]", "mcp[0].idempotent", "valid list"),
        ("mcp: [{server: s, command: x, timeouts: {pay: -1}}]", "mcp[0].timeouts.pay", "greater than 0"),
        (
            "http: [{name: t, version: '1', url: 'http://h/a'}, {name: t, version: '2', url: 'http://h/b'}]",
            "(the whole file)",
            "two HTTP tools share a name: ['t']",
        ),
        ("mcp: [{server: s, command: x}, {server: s, command: y}]", "(the whole file)", "two MCP servers"),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, text: str, where: str, what: str) -> None:
    path = write_pack(tmp_path, text)
    with pytest.raises(ToolPackError) as caught:
        load_tool_pack(path)
    message = str(caught.value)
    assert caught.value.code == "BAD_TOOL_PACK"
    assert str(path) in message and f"{where}: " in message and what in message


@pytest.mark.parametrize(
    ("text", "what"),
    [("http: [name: t", "is not valid YAML"), ("- python", "must be a mapping with keys python, http and mcp")],
)
def test_a_file_that_is_not_a_pack_mapping_is_refused(tmp_path: Path, text: str, what: str) -> None:
    path = write_pack(tmp_path, text)
    with pytest.raises(ToolPackError, match=what) as caught:
        load_tool_pack(path)
    assert str(path) in str(caught.value)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ToolPackError, match=r"cannot read tool pack .*nowhere\.yaml"):
        load_tool_pack(tmp_path / "nowhere.yaml")


def test_parse_names_the_source_it_is_given() -> None:
    with pytest.raises(ToolPackError, match="inline pack is not a valid tool pack: python: "):
        parse_tool_pack("python: invoice_tools", source="inline pack")
