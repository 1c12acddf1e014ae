"""Identities, the keyring and the producer matrix: what a signature proves and what it refuses."""

from __future__ import annotations

from pathlib import Path

import pytest

from baton import identity, topics
from baton.identity import (
    AuthenticationError,
    Identity,
    IdentityConfigError,
    Keyring,
    Trust,
    TrustDomain,
    load_trust,
    signed_message,
)

DOMAIN = TrustDomain.generate([identity.SUPERVISOR, identity.CLIENT, identity.agent_role("kyc")])


def _verify(ring: Keyring, signer: Identity, topic: str, key: bytes, value: bytes, *, signed_for: str = "") -> str:
    signature = signer.sign(signed_message(signed_for or topic, key, value))
    return ring.verify(signer.key_id.encode(), signature, signed_message(topic, key, value))


def test_a_signature_proves_the_role_of_whoever_signed_these_exact_bytes() -> None:
    sup = DOMAIN.identities[identity.SUPERVISOR]
    assert _verify(DOMAIN.keyring, sup, topics.OUTCOMES, b"wf", b"bytes") == identity.SUPERVISOR


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ("value", "BAD_SIGNATURE"),  # one byte changed after signing
        ("topic", "BAD_SIGNATURE"),  # replayed onto another topic
        ("key", "BAD_SIGNATURE"),  # replayed under another workflow's key
        ("stranger", "UNKNOWN_SIGNER"),  # a key pair nobody distributed, claiming a real role
        ("unsigned", "UNSIGNED"),
    ],
)
def test_what_a_signature_refuses(change: str, code: str) -> None:
    sup = DOMAIN.identities[identity.SUPERVISOR]
    topic, key, value = topics.OUTCOMES, b"wf", b"bytes"
    signature = sup.sign(signed_message(topic, key, value))
    key_id: bytes | None = sup.key_id.encode()
    sig: bytes | None = signature
    if change == "value":
        value = b"bytez"
    elif change == "topic":
        topic = topics.TASKS
    elif change == "key":
        key = b"wf-other"
    elif change == "stranger":
        forger = Identity.generate(identity.SUPERVISOR)
        key_id, sig = forger.key_id.encode(), forger.sign(signed_message(topic, key, value))
    else:
        key_id = sig = None
    with pytest.raises(AuthenticationError) as err:
        DOMAIN.keyring.verify(key_id, sig, signed_message(topic, key, value))
    assert err.value.code == code


def test_framing_is_unambiguous() -> None:
    assert signed_message("ab", b"c", b"d") != signed_message("a", b"bc", b"d")


def test_keys_written_and_loaded_round_trip(tmp_path: Path) -> None:
    DOMAIN.write(tmp_path)
    assert oct((tmp_path / "agent-kyc.key").stat().st_mode & 0o777) == "0o600"
    trust = load_trust(
        identity.agent_role("kyc"), signing_key=None, signing_key_file=None, keys_dir=tmp_path, keyring_path=None
    )
    assert trust.identity.key_id == DOMAIN.identities[identity.agent_role("kyc")].key_id
    assert Keyring.load(tmp_path / "keyring.json").roles() == set(DOMAIN.identities)
    seed = (tmp_path / "client.key").read_text()
    from_env = load_trust(
        identity.CLIENT, signing_key=seed, signing_key_file=None, keys_dir=None, keyring_path=tmp_path / "keyring.json"
    )
    assert from_env.identity.key_id == DOMAIN.identities[identity.CLIENT].key_id


def test_a_process_without_a_key_or_with_a_key_the_keyring_does_not_hold_is_refused(tmp_path: Path) -> None:
    with pytest.raises(IdentityConfigError, match="baton keys generate"):
        load_trust(identity.CLIENT, signing_key=None, signing_key_file=None, keys_dir=None, keyring_path=None)
    with pytest.raises(IdentityConfigError, match="holds no such public key"):
        Trust(Identity.generate(identity.CLIENT), DOMAIN.keyring)
    # A supervisor's key presented as the client's: the keyring binds each key to one role.
    with pytest.raises(IdentityConfigError, match="holds no such public key"):
        Trust(Identity(identity.CLIENT, DOMAIN.identities[identity.SUPERVISOR].private_key), DOMAIN.keyring)
    (tmp_path / "keyring.json").write_text('{"keys": [{"role": "client", "public_key": "not base64!"}]}')
    with pytest.raises(IdentityConfigError, match="not base64"):
        Keyring.load(tmp_path / "keyring.json")


def test_the_producer_matrix() -> None:
    assert topics.may_produce(identity.SUPERVISOR, topics.agent_steps("kyc"), "StepRequested")
    assert not topics.may_produce(identity.agent_role("kyc"), topics.agent_steps("kyc"), "StepRequested")
    assert topics.may_produce(identity.agent_role("kyc"), topics.HANDOFF_PROPOSALS, "HandoffProposed")
    assert not topics.may_produce(identity.agent_role("kyc"), topics.HANDOFF_VERDICTS, "HandoffAccepted")
    assert not topics.may_produce(identity.CLIENT, topics.OUTCOMES, "WorkflowCompleted")
    assert not topics.may_produce(identity.SUPERVISOR, topics.TASKS, "TaskRequested")
    # every topic Baton defines has a producer for every event type it carries
    for topic, by_type in topics.PRODUCERS.items():
        assert by_type and all(by_type.values()), topic


def test_docs_show_the_matrix_the_code_enforces() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    assert topics.producer_matrix_markdown() in doc, "docs/security.md: paste `baton keys matrix` in again"


def test_a_keyring_binds_each_key_to_one_well_formed_role() -> None:
    shared = Identity.generate(identity.SUPERVISOR).public_key
    with pytest.raises(IdentityConfigError, match="both 'supervisor' and 'client'"):
        Keyring([(identity.SUPERVISOR, shared), (identity.CLIENT, shared)])
    for bad in ("agent:*", "agent:", "Supervisor", ""):
        with pytest.raises(IdentityConfigError, match="is not a role"):
            Keyring([(bad, Identity.generate("x").public_key)])


def test_the_keyring_shipped_with_the_declarations_is_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from baton.runtime import RuntimeSettings, build_trust

    DOMAIN.write(tmp_path / "keys")
    declarations = tmp_path / "workflows"
    declarations.mkdir()
    (declarations / "keyring.json").write_text((tmp_path / "keys" / "keyring.json").read_text())
    monkeypatch.setenv("BATON_WORKFLOW_DIR", str(declarations))
    seed = (tmp_path / "keys" / "client.key").read_text()
    trust = build_trust(RuntimeSettings(signing_key=seed), role=identity.CLIENT)
    assert trust.identity.key_id == DOMAIN.identities[identity.CLIENT].key_id
