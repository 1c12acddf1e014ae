"""One generated trust domain for the test session: an Ed25519 identity per role and their keyring."""

from __future__ import annotations

from pathlib import Path

from baton.bus.base import Bus, BusRecord, Headers
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import SIGNATURE_HEADER, SIGNER_HEADER, Trust, TrustDomain, all_roles, signed_message
from baton.messaging import EventBus
from baton.workflows import agent_kinds, load_workflows

DOMAIN = TrustDomain.generate(all_roles(agent_kinds(load_workflows())))


def trust(role: str) -> Trust:
    """The session's identity for a role (and the keyring every other identity of the session is in)."""
    return DOMAIN.trust(role)


def events_as(role: str, bus: Bus, *, serde: AvroSerde | None = None, producer: str | None = None) -> EventBus:
    """An event bus on bus that signs as role."""
    return EventBus(
        bus=bus, serde=serde or AvroSerde(LocalSchemaRegistry()), producer=producer or f"test-{role}", trust=trust(role)
    )


def write_keys(directory: Path) -> Path:
    """The session's keys as `baton keys generate` writes them (for service processes: BATON_KEYS_DIR)."""
    DOMAIN.write(directory)
    return directory


def signed_headers(role: str, topic: str, key: bytes | None, value: bytes) -> Headers:
    """The signature headers role's identity puts on a record (for raw records a test crafts)."""
    me = trust(role).identity
    return (
        (SIGNER_HEADER, me.key_id.encode()),
        (SIGNATURE_HEADER, me.sign(signed_message(topic, key, value))),
    )


def signed_record(
    role: str, topic: str, value: bytes, *, key: bytes | None = b"wf", partition: int = 0, offset: int = 0
) -> BusRecord:
    """A record as it arrives from the bus, signed by role: garbage from an insider, for example."""
    return BusRecord(topic, partition, offset, key, value, headers=signed_headers(role, topic, key, value))


async def publish_signed(bus: Bus, role: str, topic: str, value: bytes, *, key: bytes | None) -> None:
    """Publish raw bytes signed by role (an identity that holds a key but sends bytes of its own making)."""
    await bus.publish(topic, value, key=key, headers=signed_headers(role, topic, key, value))
