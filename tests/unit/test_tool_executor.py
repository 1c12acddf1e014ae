"""A step's tool calls through the registry and Baton's own ledger: a write acts once per key, whatever the tool."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

from baton.contracts.models import FailureClass, PermissionTier
from baton.ledger import Ledger
from baton.receipts import LedgerToolReceipts
from baton.tools import PythonToolProvider, ToolContext, ToolError, ToolRegistry, python_tool, tools_of
from baton.tools.executor import NeedsHumanError, StepTools, arguments_sha256, escalates
from baton.workflows import ToolSpec


class Paid(BaseModel):
    payment_id: str
    amount: float


class Payments:
    """A payments API that knows nothing of idempotency keys: every call it receives pays."""

    def __init__(self) -> None:
        self.paid: list[tuple[str, float]] = []
        self.fail_with: ToolError | None = None
        self.hang = False
        self.crash_after_paying = False

    @python_tool(version="1", tier="IRREVERSIBLE", timeout_s=0.2)
    async def pay(self, invoice_id: str, amount: float) -> Paid:
        """Pay an invoice (not idempotent)."""
        if self.hang:
            await asyncio.sleep(5)
        if self.fail_with is not None:
            raise self.fail_with
        self.paid.append((invoice_id, amount))
        if self.crash_after_paying:
            raise KeyError("ledger_row")  # a bug in the tool, after its effect
        return Paid(payment_id=f"pay-{len(self.paid)}", amount=amount)

    @python_tool(version="1", tier="WRITE", idempotent=True, timeout_s=0.2)
    async def tag(self, invoice_id: str, ctx: ToolContext) -> dict[str, str]:
        """Tag an invoice (idempotent: the tag is the key)."""
        if self.hang:
            await asyncio.sleep(5)
        if self.fail_with is not None:
            raise self.fail_with
        self.paid.append((f"tag:{ctx.idempotency_key}", 0.0))
        return {"tag": ctx.idempotency_key}

    @python_tool(version="1", tier="READ", idempotent=True, timeout_s=0.2)
    async def balance(self, invoice_id: str) -> dict[str, float]:
        """Read what is owed."""
        if self.hang:
            await asyncio.sleep(5)
        return {"owed": 10.0}


PAY = ToolSpec(name="pay", version="1", tier=PermissionTier.IRREVERSIBLE, result_key="payment")
TAG = ToolSpec(name="tag", version="1", tier=PermissionTier.WRITE, result_key="tag")
BALANCE = ToolSpec(name="balance", version="1", tier=PermissionTier.READ, result_key="balance")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "ledger.db")
    yield led
    led.close()


async def _step(payments: Payments, ledger: Ledger, version: int = 4) -> StepTools:
    registry = ToolRegistry([PythonToolProvider(tools_of(payments))])
    await registry.start()
    return StepTools(registry, ledger, workflow_id="wf-1", agent="payer", tenant_id="acme", step_version=version)


async def test_a_redelivered_step_gets_the_first_result_and_the_tool_is_not_called_again(ledger: Ledger) -> None:
    payments = Payments()
    first = await (await _step(payments, ledger)).run(PAY, {"invoice_id": "inv-1", "amount": 120.0}, 0)
    again = await (await _step(payments, ledger)).run(PAY, {"invoice_id": "inv-1", "amount": 120.0}, 0)
    assert again.replayed and again.result == first.result and again.key == first.key
    assert payments.paid == [("inv-1", 120.0)]
    assert ledger.verify().counts["tool_calls_replayed"] == 1


async def test_keys_name_the_step_so_a_rerun_that_chooses_other_arguments_escalates(ledger: Ledger) -> None:
    payments = Payments()
    await (await _step(payments, ledger)).run(PAY, {"invoice_id": "inv-1", "amount": 120.0}, 0)
    with pytest.raises(NeedsHumanError) as diverged:
        await (await _step(payments, ledger)).run(PAY, {"invoice_id": "inv-1", "amount": 121.0}, 0)
    assert diverged.value.code == "WRITE_DIVERGED" and escalates(diverged.value) is None
    assert payments.paid == [("inv-1", 120.0)]
    # The next step (a later context version) is another call, with its own key.
    later = await (await _step(payments, ledger, version=6)).run(PAY, {"invoice_id": "inv-1", "amount": 5.0}, 0)
    assert not later.replayed and len(payments.paid) == 2


async def test_a_death_between_the_effect_and_the_ledger_is_never_guessed_for_a_non_idempotent_tool(
    ledger: Ledger,
) -> None:
    payments = Payments()
    tools = await _step(payments, ledger)
    key = tools.key("pay", 0)
    # What a process that died after calling pay (and maybe paying) left: the intent, no result.
    ledger.call_started(
        key, workflow_id="wf-1", tool="pay", arguments_sha256=arguments_sha256({"invoice_id": "i", "amount": 1})
    )
    with pytest.raises(NeedsHumanError) as unknown:
        await tools.run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert unknown.value.code == "EFFECT_UNKNOWN" and payments.paid == []


async def test_an_idempotent_tool_is_called_again_under_the_same_key_after_such_a_death(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _step(payments, ledger)
    key = tools.key("tag", 0)
    ledger.call_started(key, workflow_id="wf-1", tool="tag", arguments_sha256=arguments_sha256({"invoice_id": "i"}))
    run = await tools.run(TAG, {"invoice_id": "i"}, 0)
    assert run.result == {"tag": key} and payments.paid == [(f"tag:{key}", 0.0)]  # same key: the tool dedupes
    assert ledger.verify().counts["tool_calls_run_twice"] == 1


async def test_a_write_that_timed_out_is_not_retried_unless_idempotent(ledger: Ledger) -> None:
    payments = Payments()
    payments.hang = True
    tools = await _step(payments, ledger)
    with pytest.raises(NeedsHumanError) as unknown:
        await tools.run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert unknown.value.code == "EFFECT_UNKNOWN" and "TIMEOUT" in str(unknown.value)
    with pytest.raises(ToolError) as idempotent:
        await tools.run(TAG, {"invoice_id": "i"}, 0)
    assert idempotent.value.code == "TIMEOUT" and escalates(idempotent.value) is FailureClass.TRANSIENT
    with pytest.raises(ToolError) as read:
        await tools.run(BALANCE, {"invoice_id": "i"}, 0)
    assert read.value.code == "TIMEOUT" and escalates(read.value) is FailureClass.TRANSIENT


async def test_a_refusal_that_did_not_act_clears_the_intent_so_a_retry_may_run(ledger: Ledger) -> None:
    payments = Payments()
    payments.fail_with = ToolError("INVOICE_LOCKED", "invoice is locked", FailureClass.LOGIC)
    tools = await _step(payments, ledger)
    with pytest.raises(ToolError) as refused:
        await tools.run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert refused.value.code == "INVOICE_LOCKED" and not isinstance(refused.value, NeedsHumanError)
    payments.fail_with = None
    assert not (await tools.run(PAY, {"invoice_id": "i", "amount": 1}, 0)).replayed
    assert payments.paid == [("i", 1.0)]


async def test_arguments_off_the_schema_record_nothing_and_run_nothing(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _step(payments, ledger)
    with pytest.raises(ToolError, match=r"amount: expected type 'number', got 'lots'") as bad:
        await tools.run(PAY, {"invoice_id": "i", "amount": "lots"}, 0)
    assert bad.value.code == "BAD_ARGUMENTS" and bad.value.failure_class is FailureClass.LOGIC
    assert payments.paid == [] and ledger.verify().counts["tool_calls"] == 0


async def test_reads_leave_a_receipt_and_no_ledger_entry(ledger: Ledger) -> None:
    tools = await _step(Payments(), ledger)
    run = await tools.run(BALANCE, {"invoice_id": "i"}, 0)
    assert run.key == "wf-1:payer:balance:v4.0"
    assert ledger.verify().counts["tool_calls"] == 0
    receipts = LedgerToolReceipts(ledger.path)
    assert list(await receipts.find({run.key})) == [run.key]
    receipts.close()


@pytest.mark.parametrize(
    "failure",
    [
        ToolError("CONNECTION_LOST", "the connection dropped after the request was sent", FailureClass.TRANSIENT),
        ToolError("HTTP_502", "bad gateway", FailureClass.TRANSIENT),
        ToolError("SOMETHING_NEW", "a transient failure nobody listed", FailureClass.TRANSIENT),
    ],
)
async def test_a_write_whose_call_may_have_reached_the_tool_is_never_retried(
    ledger: Ledger, failure: ToolError
) -> None:
    payments = Payments()
    payments.fail_with = failure
    with pytest.raises(NeedsHumanError) as unknown:
        await (await _step(payments, ledger)).run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert unknown.value.code == "EFFECT_UNKNOWN"
    payments.fail_with = None  # even once the tool works again, a re-run does not call it under that key
    with pytest.raises(NeedsHumanError):
        await (await _step(payments, ledger)).run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert payments.paid == []


async def test_a_tool_that_crashes_after_acting_ends_the_step_and_is_not_called_again(ledger: Ledger) -> None:
    payments = Payments()
    payments.crash_after_paying = True
    with pytest.raises(NeedsHumanError) as unknown:
        await (await _step(payments, ledger)).run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert unknown.value.code == "EFFECT_UNKNOWN" and "TOOL_FAILED" in str(unknown.value)
    assert "KeyError" in str(unknown.value)
    with pytest.raises(NeedsHumanError):
        await (await _step(payments, ledger)).run(PAY, {"invoice_id": "i", "amount": 1}, 0)
    assert payments.paid == [("i", 1.0)]


async def test_a_refused_retry_keeps_the_record_of_an_earlier_run_whose_outcome_is_unknown(ledger: Ledger) -> None:
    payments = Payments()
    tools = await _step(payments, ledger)
    key = tools.key("tag", 0)
    ledger.call_started(key, workflow_id="wf-1", tool="tag", arguments_sha256=arguments_sha256({"invoice_id": "i"}))
    # The retry never reaches the tool: this run did not act, but the first run's intent must stay.
    payments.fail_with = ToolError("UNREACHABLE", "connection refused", FailureClass.TRANSIENT)
    with pytest.raises(ToolError):
        await tools.run(TAG, {"invoice_id": "i"}, 0)
    payments.fail_with = None
    assert ledger.recorded_call(key) is not None
    with pytest.raises(NeedsHumanError) as diverged:  # a re-run with other arguments is still caught
        await tools.run(TAG, {"invoice_id": "j"}, 0)
    assert diverged.value.code == "WRITE_DIVERGED"
