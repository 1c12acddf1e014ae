"""The auditor's Ed25519 keys: it signs anchors with the private key; a verifier holds only the public key.

Both travel as standard base64 of the raw 32 bytes (the private key as its seed), in an environment
setting or in a file (a mounted secret). `baton audit keygen` writes a pair.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

# The former default HMAC key, published in this repository: refused by name so its users learn why.
DEV_KEY = "baton-development-key-change-me"
KEYGEN_HINT = "make a key pair with `baton audit keygen --out DIR`"


class AuditKeyError(ValueError):
    """A signing or verification key that is missing or unusable; the message says how to fix it."""


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh private key (the demo's ephemeral key, or `baton audit keygen`)."""
    return Ed25519PrivateKey.generate()


def encode_signing_key(key: Ed25519PrivateKey) -> str:
    """The private key's 32-byte seed as standard base64."""
    raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode("ascii")


def encode_public_key(key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key as standard base64."""
    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")


def key_id(key: Ed25519PublicKey) -> str:
    """A short fingerprint of a public key, carried by every anchor so a verifier can name the key it expected."""
    return hashlib.sha256(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).hexdigest()[:16]


def _raw32(text: str, *, what: str, source: str) -> bytes:
    text = text.strip()
    if text == DEV_KEY:
        raise AuditKeyError(
            f"{source} holds the published development key {DEV_KEY!r}: anyone could sign an audit with it; "
            f"{KEYGEN_HINT} and set the auditor's signing key from the private one"
        )
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise AuditKeyError(
            f"{source} is not an Ed25519 {what}: expected standard base64 of 32 raw bytes "
            f"(44 characters), got {len(text)} characters; {KEYGEN_HINT}"
        )
    return raw


def load_signing_key(text: str, *, source: str) -> Ed25519PrivateKey:
    """The private key from its base64 seed; AuditKeyError naming `source` when it is not one."""
    return Ed25519PrivateKey.from_private_bytes(_raw32(text, what="private key (seed)", source=source))


def load_public_key(text: str, *, source: str) -> Ed25519PublicKey:
    """The public key from its base64 form; AuditKeyError naming `source` when it is not one."""
    return Ed25519PublicKey.from_public_bytes(_raw32(text, what="public key", source=source))
