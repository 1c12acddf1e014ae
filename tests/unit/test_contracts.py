"""Every model round-trips through its schema; models mirror schemas field by field; the gate bites."""

from __future__ import annotations

import copy
import io
import json
import random
import struct
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import fastavro
import pytest
from pydantic import Field

from baton.contracts.catalogue import Catalogue, load_catalogue, subject_of
from baton.contracts.compat import backward_incompatibilities, backward_problems, check_catalogue
from baton.contracts.mirror import PRODUCER_SIDE_DEFAULTS, check_models_against_schemas
from baton.contracts.models import (
    EVENT_MODELS,
    RECORD_MODELS,
    ControlAction,
    ControlScope,
    Envelope,
    Event,
    Record,
    TaskRequested,
)
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde, DecodeError

CATALOGUE = load_catalogue()


def example(schema: Any, rnd: random.Random) -> Any:
    """A random datum valid for an (inlined, parsed) Avro schema."""
    if isinstance(schema, list):
        non_null = [b for b in schema if b != "null"]
        return example(rnd.choice(non_null), rnd) if non_null and rnd.random() < 0.8 else None
    if isinstance(schema, str):
        return {
            "null": None,
            "boolean": rnd.random() < 0.5,
            "int": rnd.randint(-1000, 1000),
            "long": rnd.randint(-(2**40), 2**40),
            "float": 1.5,
            "double": rnd.random(),
            "string": "s-é-" + str(rnd.randint(0, 10**6)),
            "bytes": bytes(rnd.randrange(256) for _ in range(8)),
        }[schema]
    if schema.get("logicalType") == "timestamp-millis":
        return datetime.fromtimestamp(rnd.randint(0, 2**31), UTC)
    kind = schema["type"]
    if kind == "record":
        return {f["name"]: example(f["type"], rnd) for f in schema["fields"]}
    if kind == "enum":
        return rnd.choice(schema["symbols"])
    if kind == "array":
        return [example(schema["items"], rnd) for _ in range(rnd.randint(0, 3))]
    if kind == "map":
        return {f"k{i}": example(schema["values"], rnd) for i in range(rnd.randint(0, 3))}
    return example(kind, rnd)


def _parsed(model: type[Record]) -> Any:
    return fastavro.parse_schema(CATALOGUE.latest(subject_of(model.avro_name)).inlined)


def _expanded(model: type[Record]) -> dict[str, Any]:
    expanded = fastavro.schema.expand_schema(CATALOGUE.latest(subject_of(model.avro_name)).inlined)
    assert isinstance(expanded, dict)
    return expanded


@pytest.mark.parametrize("model", RECORD_MODELS, ids=lambda m: m.__name__)
def test_every_model_mirrors_the_newest_version_of_its_schema(model: type[Record]) -> None:
    assert check_models_against_schemas(CATALOGUE, [model]) == []


def test_every_record_schema_has_a_model_and_the_gate_passes() -> None:
    assert check_models_against_schemas(CATALOGUE) == []
    assert check_catalogue(CATALOGUE) == []


# The schema requires these Envelope fields; the model gives them a default only so that code
# building a new event need not spell them out. Every one is still written on the wire.
PRODUCER_CONVENIENCES = {
    ("Envelope", "event_id"): "fresh UUID4 for a new event; decoding reads the written id",
    ("Envelope", "occurred_at"): "producer's clock when the event is built",
    ("Envelope", "event_type"): "AvroSerde.encode stamps it from the model",
    ("Envelope", "schema_version"): "AvroSerde.encode stamps the version it writes",
    ("Envelope", "step_seq"): "0 is the first step; a task is built before any step",
    ("Envelope", "correlation_id"): "EventBus.envelope always sets it; hand-built test envelopes leave it empty",
}


def test_only_the_listed_producer_conveniences_have_defaults_the_schema_lacks() -> None:
    assert set(PRODUCER_SIDE_DEFAULTS) == set(PRODUCER_CONVENIENCES)
    assert all(reason.strip() for reason in PRODUCER_SIDE_DEFAULTS.values())
    # without the list, exactly those fields are reported (in schema order)
    without = check_models_against_schemas(CATALOGUE, [Envelope], producer_defaults={})
    listed = [f"Envelope.{f}" for f in Envelope.model_fields if ("Envelope", f) in PRODUCER_CONVENIENCES]
    assert [p.split(":")[0] for p in without] == listed
    assert all("the schema has none, so the field must be required" in p for p in without)


def test_the_checker_catches_a_changed_type() -> None:
    class TaskRequested(Event):
        avro_name: ClassVar[str] = "io.baton.events.v2.TaskRequested"
        event_type: ClassVar[str] = "TaskRequested"
        workflow_type: str
        input_json: str
        requested_by: int
        deadline: datetime | None = None
        labels: dict[str, str] = Field(default_factory=dict)

    assert check_models_against_schemas(CATALOGUE, [TaskRequested]) == [
        'TaskRequested.requested_by: type differs: the schema type "string" maps to str, found int'
    ]


def test_the_checker_catches_a_changed_container_type() -> None:
    class TaskRequested(Event):
        avro_name: ClassVar[str] = "io.baton.events.v2.TaskRequested"
        event_type: ClassVar[str] = "TaskRequested"
        workflow_type: str
        input_json: str
        requested_by: str
        deadline: datetime | None = None
        labels: dict[str, int] = Field(default_factory=dict)

    assert check_models_against_schemas(CATALOGUE, [TaskRequested]) == [
        'TaskRequested.labels: type differs: the schema type {"type": "map", "values": "string"} maps to '
        "dict[str, str], found dict[str, int]"
    ]


def test_the_checker_catches_a_changed_optionality() -> None:
    class ControlCommand(Event):
        avro_name: ClassVar[str] = "io.baton.events.v1.ControlCommand"
        event_type: ClassVar[str] = "ControlCommand"
        command: ControlAction
        scope: ControlScope
        target: str  # the schema has ["null", "string"] with default null
        reason: str | None  # the schema has "string"
        issued_by: str

    problems = check_models_against_schemas(CATALOGUE, [ControlCommand])
    assert problems == [
        'ControlCommand.target: optionality differs: the schema type ["null", "string"] is a union with null, '
        "so the annotation must be Optional: expected str | None, found str",
        "ControlCommand.target: default differs: expected default None (from the schema), found a required field",
        'ControlCommand.reason: optionality differs: the schema type "string" has no null branch, '
        "so the annotation must not be Optional: expected str, found str | None",
    ]


def test_the_checker_catches_a_changed_or_missing_default() -> None:
    class ContextSnapshot(Record):
        avro_name: ClassVar[str] = "io.baton.common.v1.ContextSnapshot"
        context_json: str
        sha256: str
        size_bytes: int
        version: int = 1  # the schema has no default
        parent_sha256: str | None = ""  # the schema's default is null

    class ContextDiff(Record):
        avro_name: ClassVar[str] = "io.baton.common.v1.ContextDiff"
        added: list[str]  # the schema's default is []
        removed: list[str] = Field(default_factory=list)
        changed: list[str] = Field(default_factory=lambda: ["x"])

    assert check_models_against_schemas(CATALOGUE, [ContextSnapshot, ContextDiff]) == [
        "ContextSnapshot.version: default differs: the schema has none, so the field must be required; found "
        "default 1 (if it only spares producers, list it in PRODUCER_SIDE_DEFAULTS with why)",
        "ContextSnapshot.parent_sha256: default differs: expected None (from the schema), found ''",
        "ContextDiff.added: default differs: expected default [] (from the schema), found a required field",
        "ContextDiff.changed: default differs: expected [] (from the schema), found ['x']",
    ]


def test_the_checker_catches_a_missing_extra_or_reordered_field() -> None:
    class ContextDiff(Record):
        avro_name: ClassVar[str] = "io.baton.common.v1.ContextDiff"
        removed: list[str] = Field(default_factory=list)
        added: list[str] = Field(default_factory=list)
        note: str = ""

    assert check_models_against_schemas(CATALOGUE, [ContextDiff]) == [
        "ContextDiff.changed: field missing from the model (ContextDiff.v1.avsc has it)",
        "ContextDiff.note: field not in the schema (ContextDiff.v1.avsc lacks it)",
        "ContextDiff: field order differs: expected ['added', 'removed'], found ['removed', 'added']",
    ]


def test_the_checker_catches_a_missing_enum_symbol() -> None:
    class ControlAction(StrEnum):
        HALT = "HALT"

    class ControlCommand(Event):
        avro_name: ClassVar[str] = "io.baton.events.v1.ControlCommand"
        event_type: ClassVar[str] = "ControlCommand"
        command: ControlAction
        scope: ControlScope
        target: str | None = None
        reason: str
        issued_by: str

    assert check_models_against_schemas(CATALOGUE, [ControlCommand]) == [
        "ControlCommand.command: enum symbols differ (missing ['RESUME']): expected StrEnum ControlAction(HALT, "
        "RESUME), found StrEnum ControlAction(HALT)"
    ]


def test_the_checker_catches_a_model_left_on_an_old_version() -> None:
    class TaskRequested(Event):
        avro_name: ClassVar[str] = "io.baton.events.v1.TaskRequested"
        event_type: ClassVar[str] = "TaskRequested"
        workflow_type: str
        input_json: str
        requested_by: str

    problems = check_models_against_schemas(CATALOGUE, [TaskRequested])
    assert problems[0] == (
        "TaskRequested: version differs: expected avro_name 'io.baton.events.v2.TaskRequested' (the newest "
        "schema, TaskRequested.v2.avsc), found 'io.baton.events.v1.TaskRequested'; update the model to the "
        "newest version"
    )
    assert problems[1:] == [
        "TaskRequested.deadline: field missing from the model (TaskRequested.v2.avsc has it)",
        "TaskRequested.labels: field missing from the model (TaskRequested.v2.avsc has it)",
    ]


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda m: m.__name__)
async def test_every_event_round_trips_through_its_schema(model: type[Event], serde: AvroSerde) -> None:
    schema = _expanded(model)
    for seed in range(5):
        datum = example(schema, random.Random(seed))
        datum["envelope"]["event_type"] = model.event_type
        datum["envelope"]["schema_version"] = CATALOGUE.latest(subject_of(model.avro_name)).version
        event = model.model_validate(datum)
        data = await serde.encode(event)
        assert data[0] == 0
        decoded = await serde.decode(data)
        assert decoded == event
        # and fastavro itself agrees with the bytes, independent of the models
        plain: Any = fastavro.schemaless_reader(io.BytesIO(data[5:]), _parsed(model), None)
        assert plain["envelope"]["event_id"] == event.envelope.event_id


def test_catalogue_covers_every_event_the_brief_names() -> None:
    names = {sv.full_name.rpartition(".")[2] for sv in CATALOGUE.by_name.values()}
    assert {m.__name__ for m in RECORD_MODELS} <= names
    assert len(EVENT_MODELS) == 21  # the brief's 18, GuardFlagged, ControlConfirmed and AgentAnomaly


def test_every_new_version_is_backward_compatible() -> None:
    assert backward_problems(CATALOGUE) == []
    assert len(CATALOGUE.by_subject["io.baton.events.TaskRequested"]) == 2


async def test_old_version_data_decodes_into_the_newest_model(serde: AvroSerde) -> None:
    v1 = CATALOGUE.by_subject["io.baton.events.TaskRequested"][0]
    datum = {
        "envelope": {
            "event_id": "e1",
            "event_type": "TaskRequested",
            "schema_version": 1,
            "workflow_id": "wf",
            "tenant_id": "t",
            "step_seq": 0,
            "causation_id": None,
            "correlation_id": "wf",
            "producer": "old-client",
            "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        },
        "workflow_type": "support_refund",
        "input_json": "{}",
        "requested_by": "crm",
    }
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, v1.schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(v1.inlined), datum)
    event = await serde.decode(buf.getvalue())
    assert isinstance(event, TaskRequested)
    assert event.envelope.schema_version == 1
    assert event.deadline is None and event.labels == {}


def _copy_catalogue_with(tmp_path: Path, name: str, mutate: Any) -> Catalogue:
    root = tmp_path / "schemas"
    root.mkdir()
    for sub in ("common", "events"):
        (root / sub).mkdir()
        for f in (CATALOGUE.root / sub).glob("*.avsc"):
            (root / sub / f.name).write_text(f.read_text())
    v2 = json.loads((root / "events" / f"{name}.v2.avsc").read_text())
    mutate(v2)
    (root / "events" / f"{name}.v2.avsc").write_text(json.dumps(v2))
    return load_catalogue(root)


def test_a_field_added_without_default_is_rejected_naming_the_field(tmp_path: Path) -> None:
    def add_required(schema: dict[str, Any]) -> None:
        schema["fields"].append({"name": "priority", "type": "int"})

    catalogue = _copy_catalogue_with(tmp_path, "TaskRequested", add_required)
    problems = backward_problems(catalogue)
    assert len(problems) == 1
    assert "priority" in problems[0] and "without a default" in problems[0]
    assert "TaskRequested v2 is not BACKWARD compatible with v1" in problems[0]
    # the gate also sees that the model no longer mirrors the schema
    assert check_catalogue(catalogue) == [
        *problems,
        "TaskRequested.priority: field missing from the model (TaskRequested.v2.avsc has it)",
    ]


def test_a_type_change_is_rejected_naming_the_field(tmp_path: Path) -> None:
    def retype(schema: dict[str, Any]) -> None:
        for f in schema["fields"]:
            if f["name"] == "requested_by":
                f["type"] = "int"

    problems = backward_problems(_copy_catalogue_with(tmp_path, "TaskRequested", retype))
    assert any("requested_by" in p and "'string' to 'int'" in p for p in problems)


def test_compatibility_rules() -> None:
    writer: dict[str, Any] = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "a", "type": "int"},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["X", "Y"]}},
        ],
    }
    widened = copy.deepcopy(writer)
    widened["fields"][0]["type"] = "long"
    assert backward_incompatibilities(widened, writer) == []
    narrowed = copy.deepcopy(writer)
    narrowed["fields"][1]["type"]["symbols"] = ["X"]
    assert "enum symbols ['Y']" in str(backward_incompatibilities(narrowed, writer)[0])
    optional = copy.deepcopy(writer)
    optional["fields"][0]["type"] = ["null", "int"]
    assert backward_incompatibilities(optional, writer) == []
    renamed = copy.deepcopy(writer)
    renamed["name"] = "Other"
    assert "record name changed" in str(backward_incompatibilities(renamed, writer)[0])


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "TOO_SHORT"),
        (b"\x07garbage-bytes", "BAD_MAGIC_BYTE"),
        (b"\x00\x7f\xff\xff\xfe" + b"x" * 20, "UNKNOWN_SCHEMA_ID"),
    ],
)
async def test_undecodable_bytes_raise_a_decode_error_with_a_code(data: bytes, code: str, serde: AvroSerde) -> None:
    with pytest.raises(DecodeError) as info:
        await serde.decode(data)
    assert info.value.code == code
    assert len(str(info.value)) > 30


async def test_corrupt_avro_payload_and_trailing_bytes_are_errors(serde: AvroSerde) -> None:
    sid = CATALOGUE.latest("io.baton.events.ControlCommand").schema_id
    with pytest.raises(DecodeError) as info:
        await serde.decode(struct.pack(">bI", 0, sid) + b"\xff" * 3)
    assert info.value.code == "AVRO_DECODE"
    good = await serde.encode(TaskRequested.model_validate(example(_expanded(TaskRequested), random.Random(1)) | {}))
    with pytest.raises(DecodeError) as info:
        await serde.decode(good + b"\x00\x01")
    assert info.value.code == "TRAILING_BYTES"


async def test_local_registry_ids_are_stable_and_unknown_ids_explain_themselves() -> None:
    reg = LocalSchemaRegistry()
    sv = CATALOGUE.latest("io.baton.events.HandoffProposed")
    assert await reg.register(sv.subject, sv.inlined) == sv.schema_id == load_catalogue().latest(sv.subject).schema_id
    with pytest.raises(LookupError, match="not among"):
        await reg.schema_by_id(1)
