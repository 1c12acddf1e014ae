"""Who produced an event: Ed25519 identities per role, the public keyring, and signatures over exact bytes.

Every service and every agent kind signs what it publishes with its own private key; every consumer
checks the signature against the keyring (public keys only) and the signer's role against the
producer matrix in `baton.topics`. No broker imports: `baton.messaging` puts the signature in a header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nacl.exceptions
import nacl.signing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SUPERVISOR = "supervisor"
HANDOFF_VALIDATOR = "handoff-validator"
AUDITOR = "auditor"
CLIENT = "client"
OPERATOR = "operator"
POLICY_GUARD = "policy-guard"
APPROVALS = "approvals"
AGENT_PREFIX = "agent:"
SERVICE_ROLES: tuple[str, ...] = (SUPERVISOR, HANDOFF_VALIDATOR, AUDITOR, CLIENT, OPERATOR, POLICY_GUARD, APPROVALS)

_ROLE = re.compile(r"[a-z][a-z0-9-]*|agent:[A-Za-z0-9_][A-Za-z0-9_.-]*")

SIGNER_HEADER = "baton-signer"
SIGNATURE_HEADER = "baton-signature"
KEYRING_FILE = "keyring.json"
_DOMAIN = b"baton-event-signature-v1\x00"


def agent_role(kind: str) -> str:
    """The role of one agent kind's replicas."""
    return f"{AGENT_PREFIX}{kind}"


def agent_kind(role: str) -> str | None:
    """The agent kind a role stands for, or None when it is not an agent's role."""
    return role[len(AGENT_PREFIX) :] if role.startswith(AGENT_PREFIX) else None


def all_roles(agent_kinds: Iterable[str]) -> list[str]:
    """Every role a deployment needs: the services', the client's, the operator's and one per agent kind."""
    return [*SERVICE_ROLES, *(agent_role(k) for k in sorted(agent_kinds))]


def role_of_service(service: str) -> str:
    """The role a service label signs as: `agent-<kind>` is `agent:<kind>`, `*client` is `client`."""
    if service.startswith("agent-"):
        return agent_role(service[len("agent-") :])
    if service.endswith("client") or service.startswith("baton-cli"):
        return CLIENT
    # A second replica's label ("supervisor-2") signs as the same role.
    return next((r for r in SERVICE_ROLES if service == r or service.startswith(r + "-")), service)


def signed_message(topic: str, key: bytes | None, value: bytes) -> bytes:
    """What a signature covers: the topic, the record key and the exact value bytes, unambiguously framed.

    The topic and key are covered so a signed event cannot be replayed onto another topic or partition.
    """
    parts = (topic.encode(), key or b"", value)
    return _DOMAIN + b"".join(len(p).to_bytes(8, "big") + p for p in parts)


class AuthenticationError(Exception):
    """An event's signature does not prove who produced it; `code` is machine-readable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class IdentityConfigError(ValueError):
    """This process has no usable identity or keyring; the message says how to provide one."""


def _fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise IdentityConfigError(f"{what} is not base64: {exc}") from exc


@dataclass(frozen=True)
class Identity:
    """One role's private key: signs what this process publishes.

    Keys are `cryptography` objects (their formats are Baton's); signing itself runs through libsodium
    (PyNaCl), the same Ed25519 with the same signatures, at lower cost per event.
    """

    role: str
    private_key: Ed25519PrivateKey
    _signer: nacl.signing.SigningKey = field(init=False, repr=False, compare=False)
    _key_id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        seed = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        object.__setattr__(self, "_signer", nacl.signing.SigningKey(seed))
        object.__setattr__(self, "_key_id", f"{self.role}#{_fingerprint(self.private_key.public_key())}")

    @classmethod
    def generate(cls, role: str) -> Identity:
        return cls(role, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed_b64(cls, role: str, seed_b64: str) -> Identity:
        """From a base64 raw 32-byte Ed25519 seed (what `baton keys generate` writes)."""
        seed = _b64decode(seed_b64, f"the signing key of {role}")
        if len(seed) != 32:
            raise IdentityConfigError(f"the signing key of {role} is {len(seed)} bytes; an Ed25519 seed is 32")
        return cls(role, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        """`role#fingerprint`: names the key in a header, so a consumer finds it in the keyring."""
        return self._key_id

    def seed_b64(self) -> str:
        raw = self.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return base64.b64encode(raw).decode()

    def public_b64(self) -> str:
        return base64.b64encode(self.public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message).signature


class Keyring:
    """Public keys by key id, each with the role it may sign as (rotation: a role may have several)."""

    def __init__(self, keys: Iterable[tuple[str, Ed25519PublicKey]]) -> None:
        self._keys: dict[str, tuple[str, Ed25519PublicKey]] = {}
        self._verifiers: dict[str, nacl.signing.VerifyKey] = {}
        roles_of: dict[str, str] = {}
        for role, public in keys:
            if not _ROLE.fullmatch(role):
                raise IdentityConfigError(
                    f"keyring role {role!r} is not a role: use a service's name or agent:<kind> (`baton keys generate`)"
                )
            fingerprint = _fingerprint(public)
            if roles_of.setdefault(fingerprint, role) != role:
                raise IdentityConfigError(
                    f"one public key is listed for both {roles_of[fingerprint]!r} and {role!r}: a key signs for one "
                    "role only; give each role its own key pair"
                )
            self._keys[f"{role}#{fingerprint}"] = (role, public)
            self._verifiers[f"{role}#{fingerprint}"] = nacl.signing.VerifyKey(
                public.public_bytes(Encoding.Raw, PublicFormat.Raw)
            )

    @classmethod
    def of(cls, identities: Iterable[Identity]) -> Keyring:
        return cls((i.role, i.public_key) for i in identities)

    @classmethod
    def from_json(cls, text: str, *, source: str = "keyring") -> Keyring:
        """From `{"keys": [{"role": ..., "public_key": base64 raw 32 bytes}, ...]}`."""
        try:
            entries = json.loads(text)["keys"]
            pairs = [(str(e["role"]), str(e["public_key"])) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise IdentityConfigError(
                f'{source} is not a keyring ({type(exc).__name__}: {exc}); expected {{"keys": [{{"role": ..., '
                '"public_key": ...}]}; make one with `baton keys generate`'
            ) from exc
        keys = []
        for role, b64 in pairs:
            raw = _b64decode(b64, f"{source}: the public key of {role}")
            if len(raw) != 32:
                raise IdentityConfigError(f"{source}: the public key of {role} is {len(raw)} bytes, not 32")
            keys.append((role, Ed25519PublicKey.from_public_bytes(raw)))
        return cls(keys)

    @classmethod
    def load(cls, path: Path) -> Keyring:
        try:
            return cls.from_json(path.read_text(), source=str(path))
        except OSError as exc:
            raise IdentityConfigError(
                f"cannot read the keyring {path}: {exc}; make one with `baton keys generate --out DIR`"
            ) from exc

    def to_json(self) -> str:
        keys = [
            {"role": role, "public_key": base64.b64encode(pub.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()}
            for role, pub in sorted(self._keys.values(), key=lambda rp: rp[0])
        ]
        return json.dumps({"keys": keys}, indent=2) + "\n"

    def roles(self) -> set[str]:
        return {role for role, _ in self._keys.values()}

    def knows(self, identity: Identity) -> bool:
        """Whether this identity's public key is in the keyring under its own role."""
        return self._keys.get(identity.key_id, ("", None))[0] == identity.role

    def verify(self, key_id: bytes | None, signature: bytes | None, message: bytes) -> str:
        """The role that signed message; raises AuthenticationError naming what is wrong."""
        if key_id is None or signature is None:
            raise AuthenticationError(
                "UNSIGNED",
                f"the record carries no {SIGNER_HEADER}/{SIGNATURE_HEADER} headers: only events signed by a "
                "Baton identity are accepted; publish through Baton's EventBus with a configured signing key",
            )
        name = key_id.decode(errors="replace")
        known = self._keys.get(name)
        if known is None:
            raise AuthenticationError(
                "UNKNOWN_SIGNER",
                f"signer {name[:200]!r} is not in the keyring: a key that was never distributed (or was "
                "revoked); add its public key to the keyring if it is legitimate",
            )
        role, _public = known
        try:
            self._verifiers[name].verify(message, signature)
        except (nacl.exceptions.BadSignatureError, ValueError, TypeError):  # also a signature of the wrong size
            raise AuthenticationError(
                "BAD_SIGNATURE",
                f"the signature of {name} does not verify over this record's topic, key and bytes: it was "
                "altered after signing, moved to another topic or key, or signed with another key",
            ) from None
        return role


@dataclass(frozen=True)
class Trust:
    """What one process needs: its own identity (to sign) and the keyring (to check everyone else)."""

    identity: Identity
    keyring: Keyring

    def __post_init__(self) -> None:
        if not self.keyring.knows(self.identity):
            raise IdentityConfigError(
                f"this process signs as {self.identity.key_id}, but the keyring holds no such public key for "
                f"role {self.identity.role!r}: distribute its public key (`baton keys generate` writes both)"
            )


@dataclass(frozen=True)
class TrustDomain:
    """A generated identity per role and their keyring: the embedded mesh, tests and `baton keys generate`."""

    identities: Mapping[str, Identity]
    keyring: Keyring

    @classmethod
    def generate(cls, roles: Iterable[str]) -> TrustDomain:
        identities = {role: Identity.generate(role) for role in sorted(set(roles))}
        return cls(identities, Keyring.of(identities.values()))

    def trust(self, role: str) -> Trust:
        identity = self.identities.get(role)
        if identity is None:
            raise IdentityConfigError(f"no identity for role {role!r}; known roles: {sorted(self.identities)}")
        return Trust(identity, self.keyring)

    def write(self, directory: Path) -> None:
        """The keyring (public) and one private key file per role (mode 0600) into directory."""
        directory.mkdir(parents=True, exist_ok=True)
        (directory / KEYRING_FILE).write_text(self.keyring.to_json())
        for role, identity in self.identities.items():
            # Created 0600 from the start: a private key is never readable by others, not even briefly.
            fd = os.open(directory / key_file_name(role), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(identity.seed_b64() + "\n")


def key_file_name(role: str) -> str:
    """File a role's private key is kept in inside a keys directory (`agent:kyc` -> `agent-kyc.key`)."""
    return role.replace(":", "-") + ".key"


def load_trust(
    role: str,
    *,
    signing_key: str | None,
    signing_key_file: Path | None,
    keys_dir: Path | None,
    keyring_path: Path | None,
) -> Trust:
    """This process's identity and keyring from configuration.

    The private key: `signing_key` (base64 seed, e.g. from a secret in the environment), else
    `signing_key_file` (a mounted secret), else `<keys_dir>/<role>.key`. The keyring: `keyring_path`,
    else `<keys_dir>/keyring.json`.
    """
    if signing_key:
        identity = Identity.from_seed_b64(role, signing_key)
    else:
        path = signing_key_file or (keys_dir / key_file_name(role) if keys_dir is not None else None)
        if path is None:
            raise IdentityConfigError(
                f"no signing key for role {role!r}: every Baton process signs what it publishes. Set "
                "BATON_SIGNING_KEY_FILE (a mounted secret) or BATON_SIGNING_KEY, or BATON_KEYS_DIR to a "
                "directory made by `baton keys generate --out DIR`"
            )
        try:
            identity = Identity.from_seed_b64(role, path.read_text())
        except OSError as exc:
            raise IdentityConfigError(f"cannot read the signing key of {role} at {path}: {exc}") from exc
    ring = keyring_path or (keys_dir / KEYRING_FILE if keys_dir is not None else None)
    if ring is None:
        raise IdentityConfigError(
            "no keyring: set BATON_KEYRING to the public keyring (distributed with the workflow declarations), "
            "or BATON_KEYS_DIR to a directory made by `baton keys generate --out DIR`"
        )
    return Trust(identity, Keyring.load(ring))
