"""The OpenAI-compatible backend against a local HTTP server speaking chat completions."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from baton.agent import run_step
from baton.ledger import Ledger
from baton.model import MalformedOutputError, ModelRequest, OpenAIChatModel, RateLimitedError
from baton.workflows import load_workflows
from baton_demo.world import World, seeded_tenant
from tests.harness.world_tools import step_tools


class ChatServer:
    """A tiny chat-completions endpoint: answers with tool calls until every tool ran, then finishes."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.mode = "normal"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), **body})
                status, payload = server.answer(body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.mode == "429":
            return 429, {"error": {"message": "slow down"}}
        used = {m["tool_calls"][0]["function"]["name"] for m in body["messages"] if m.get("tool_calls")}
        usage = {"prompt_tokens": 120, "completion_tokens": 15}
        context = json.loads(body["messages"][1]["content"].split("\n", 1)[1])
        for tool in body["tools"]:
            fn = tool["function"]
            if fn["name"] not in used:
                args = (
                    "{not json"
                    if self.mode == "bad-args"
                    else json.dumps({p: context.get(p) for p in fn["parameters"]["properties"]})
                )
                call = {"id": "c1", "type": "function", "function": {"name": fn["name"], "arguments": args}}
                return 200, {
                    "choices": [{"message": {"role": "assistant", "content": None, "tool_calls": [call]}}],
                    "usage": usage,
                }
        final = json.dumps({"done": True, "confidence": 0.87, "rationale": "all checks done"})
        return 200, {"choices": [{"message": {"role": "assistant", "content": final}}], "usage": usage}

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def chat() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


async def test_an_agent_step_runs_through_the_openai_protocol(chat: ChatServer, tmp_path: Path) -> None:
    world = World(tmp_path / "w.db")
    world.seed(customers=10)
    spec = load_workflows()["customer_onboarding"]

    ledger = Ledger(tmp_path / "ledger.db")
    tools = await step_tools(world, ledger, workflow_id="wf", agent="identity_verification", tenant=seeded_tenant(2))
    out = await run_step(
        workflow=spec,
        agent=spec.agent("identity_verification"),
        workflow_id="wf",
        context={"customer_id": "cust-00002"},
        tools=tools,
        model=OpenAIChatModel(chat.url, "test-model", api_key="sk-test"),
        tool_schemas={
            name: tools.registry.declaration(name).parameters for name in ("lookup_customer", "verify_identity")
        },
    )
    assert out.succeeded and out.context is not None
    assert out.context["customer"]["id"] == "cust-00002"
    assert out.confidence == 0.87 and out.tokens == 3 * 135
    assert [r["path"] for r in chat.requests] == ["/v1/chat/completions"] * 3
    assert chat.requests[0]["auth"] == "Bearer sk-test" and chat.requests[0]["model"] == "test-model"
    last = chat.requests[-1]["messages"]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    # The model is shown each tool's declared JSON Schema, not a guess from its bindings.
    shown = {t["function"]["name"]: t["function"]["parameters"] for t in chat.requests[0]["tools"]}
    assert shown["lookup_customer"]["properties"]["customer_id"]["type"] == "string"
    assert shown["lookup_customer"]["additionalProperties"] is False
    ledger.close()
    world.close()


async def test_rate_limits_and_malformed_tool_calls_are_typed_errors(chat: ChatServer) -> None:
    spec = load_workflows()["customer_onboarding"]
    request = ModelRequest(workflow_id="wf", agent=spec.agent("identity_verification"), context={"customer_id": "c"})
    model = OpenAIChatModel(chat.url, "m")
    chat.mode = "429"
    with pytest.raises(RateLimitedError):
        await model.decide(request)
    chat.mode = "bad-args"
    with pytest.raises(MalformedOutputError, match="not JSON"):
        await model.decide(request)
