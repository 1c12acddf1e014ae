"""The ModelClient interface agents reason through, with a scripted and an OpenAI-compatible backend."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import httpx

from baton.workflows import AgentSpec, lookup


@dataclass(frozen=True)
class ToolChoice:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any]


@dataclass(frozen=True)
class ModelRequest:
    """What an agent shows its model: who it is, the context, the tools, what it did so far."""

    workflow_id: str
    agent: AgentSpec
    context: Mapping[str, Any]
    history: Sequence[ToolResult] = ()
    attempt: int = 1
    # Each tool's declared parameters (JSON Schema, from the registry), for backends that show them to the model.
    tool_schemas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelReply:
    """Either a tool to call, or done; with confidence and token counts."""

    tool: ToolChoice | None
    confidence: float
    prompt_tokens: int
    completion_tokens: int
    rationale: str = ""

    @property
    def done(self) -> bool:
        return self.tool is None


class ModelError(Exception):
    """The model backend failed; `transient` errors are worth retrying later."""

    code = "MODEL_ERROR"
    transient = False


class RateLimitedError(ModelError):
    code = "RATE_LIMITED"
    transient = True


class MalformedOutputError(ModelError):
    code = "MALFORMED_MODEL_OUTPUT"


class ModelUnavailableError(ModelError):
    code = "MODEL_UNAVAILABLE"
    transient = True


class ModelClient(Protocol):
    """What an agent needs from a model."""

    async def decide(self, request: ModelRequest) -> ModelReply: ...


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass
class ScriptedModel:
    """Deterministic backend: calls each declared tool once in order, with arguments looked up from the context,
    then finishes."""

    # What its GenAI spans name as provider and model.
    provider: ClassVar[str] = "baton"
    model: ClassVar[str] = "scripted"

    seed: int = 0

    def _jitter(self, request: ModelRequest) -> float:
        digest = hashlib.sha256(f"{self.seed}:{request.workflow_id}:{request.agent.name}".encode()).digest()
        return digest[0] / 255 * 0.08

    async def decide(self, request: ModelRequest) -> ModelReply:
        agent = request.agent
        prompt = 200 + _tokens(json.dumps(request.context, default=str)) + 30 * len(request.history)
        done = {h.name for h in request.history}
        for tool in agent.tools:
            if tool.name not in done:
                args = {k: lookup(request.context, v) for k, v in tool.args.items()}
                return ModelReply(
                    ToolChoice(tool.name, args), 0.92 - self._jitter(request), prompt, 30, f"need {tool.result_key}"
                )
        return ModelReply(None, 0.95 - self._jitter(request), prompt, 40, f"{agent.name} complete")


_SYSTEM = (
    "You are the {agent} agent in a Baton workflow. {description}\n"
    "Call the tools you need, one at a time. When you have what you need, reply with only a JSON object "
    '{{"done": true, "confidence": <0..1>, "rationale": "<one sentence>"}}.'
)


@dataclass
class OpenAIChatModel:
    """Backend for any OpenAI-compatible chat-completions API with tool calling."""

    base_url: str
    model: str
    api_key: str = ""
    timeout_s: float = 60.0
    client: httpx.AsyncClient | None = None

    def _messages(self, request: ModelRequest) -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = [
            {
                "role": "system",
                "content": _SYSTEM.format(agent=request.agent.name, description=request.agent.description),
            },
            {"role": "user", "content": "Context:\n" + json.dumps(dict(request.context), sort_keys=True, default=str)},
        ]
        for i, h in enumerate(request.history):
            call_id = f"call_{i}"
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": call_id,
                            "type": "function",
                            "function": {"name": h.name, "arguments": json.dumps(h.arguments)},
                        }
                    ],
                }
            )
            messages.append({"role": "tool", "tool_call_id": call_id, "content": json.dumps(h.result)})
        return messages

    @staticmethod
    def _tools(agent: AgentSpec, schemas: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        guessed = {
            t.name: {
                "type": "object",
                "properties": {a: {"type": ["string", "number"]} for a in t.args},
                "required": list(t.args),
            }
            for t in agent.tools
        }
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description or f"{t.tier.value} tool",
                    "parameters": dict(schemas.get(t.name, guessed[t.name])),
                },
            }
            for t in agent.tools
        ]

    async def decide(self, request: ModelRequest) -> ModelReply:
        client = self.client or httpx.AsyncClient(timeout=self.timeout_s)
        body = {
            "model": self.model,
            "messages": self._messages(request),
            "tools": self._tools(request.agent, request.tool_schemas),
            "temperature": 0,
        }
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            resp = await client.post(f"{self.base_url.rstrip('/')}/chat/completions", json=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ModelUnavailableError(f"model endpoint {self.base_url} unreachable: {exc}") from exc
        finally:
            if self.client is None:
                await client.aclose()
        if resp.status_code == 429:
            raise RateLimitedError(f"model endpoint rate-limited the call: {resp.text[:200]}")
        if resp.status_code >= 500:
            raise ModelUnavailableError(f"model endpoint failed: HTTP {resp.status_code}")
        if resp.status_code >= 400:
            raise ModelError(f"model endpoint refused the request: HTTP {resp.status_code} {resp.text[:300]}")
        try:
            data = resp.json()
            message = data["choices"][0]["message"]
            usage = data.get("usage", {})
        except (ValueError, KeyError, IndexError) as exc:
            raise MalformedOutputError(f"response is not a chat completion: {resp.text[:200]}") from exc
        prompt, completion = int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))
        calls = message.get("tool_calls") or []
        if calls:
            fn = calls[0].get("function", {})
            try:
                args = json.loads(fn.get("arguments") or "{}")
            except json.JSONDecodeError as exc:
                raise MalformedOutputError(f"tool call arguments are not JSON: {fn.get('arguments')!r}") from exc
            if not isinstance(args, dict):
                raise MalformedOutputError(f"tool call arguments are not an object: {args!r}")
            return ModelReply(ToolChoice(str(fn.get("name")), args), 1.0, prompt, completion, "tool call")
        try:
            final = json.loads(message.get("content") or "")
            confidence = float(final["confidence"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedOutputError(
                f"final answer is not the JSON object the agent asked for: {str(message.get('content'))[:200]!r}"
            ) from exc
        return ModelReply(None, confidence, prompt, completion, str(final.get("rationale", "")))
