"""Password and token hashing, with well-kept primitives only.

Passwords: argon2id from ``argon2-cffi`` (salted, memory-hard, parameters stored in the hash,
so they can be raised later and old hashes still verify). Hashing and verifying take tens of
milliseconds of CPU on purpose; callers run them in a thread so the event loop keeps serving.

Access tokens: 32 random bytes from :mod:`secrets`, shown once; only their SHA-256 is stored.
A fast hash is right here: a token has 256 bits of entropy, so there is nothing to guess, and
a lookup by hash needs no per-token salt.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

_hasher = PasswordHasher()

TOKEN_PREFIX = "evt_"


def hash_password_sync(password: str) -> str:
    return _hasher.hash(password)


def verify_password_sync(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password(password: str) -> str:
    """A salted argon2id hash of ``password``, computed off the event loop."""
    return await asyncio.to_thread(hash_password_sync, password)


async def verify_password(password_hash: str, password: str) -> bool:
    return await asyncio.to_thread(verify_password_sync, password_hash, password)


def new_token() -> tuple[str, str, str]:
    """``(token_id, secret, hash)`` for a new access token. The secret names its id, so a
    user can tell tokens apart, but only the hash is stored."""
    token_id = secrets.token_hex(8)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    return token_id, secret, hash_token(secret)


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def password_digest(password: str) -> bytes:
    """A fingerprint of a password that was verified, for the in-memory cache: never stored,
    and keyed with a per-process random key so it says nothing outside this process."""
    return hashlib.blake2b(password.encode(), key=_PROCESS_KEY).digest()


_PROCESS_KEY = secrets.token_bytes(32)
