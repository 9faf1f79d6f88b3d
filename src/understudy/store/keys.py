"""API keys of the gateway: created, listed, revoked, and read back for the auth check.

Keys are 256-bit random tokens (``usk_`` + 43 URL-safe characters). Only their SHA-256 digest
is stored: with that much entropy a salt adds nothing (no dictionary to precompute), and a
leaked database does not reveal a usable key. The full key is shown once, at creation.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlalchemy.engine import Row

from understudy.errors import InvalidRequest, NotFound
from understudy.store import tables as t
from understudy.store.pending import without_waiting_for_calls
from understudy.store.repository import Store

KEY_PREFIX = "usk_"
# Characters of a key kept in clear to tell keys apart in listings (prefix + 8 random ones).
SHOWN_CHARS = len(KEY_PREFIX) + 8
# Bytes of randomness in a key.
KEY_BYTES = 32


class KeyRole(StrEnum):
    """What a key may do: call the API (client) or also the dashboard and admin routes."""

    CLIENT = "client"
    ADMIN = "admin"


@dataclass(frozen=True)
class ApiKey:
    """A stored key as listed: everything but the secret (``prefix`` is its first characters)."""

    id: int
    name: str | None
    role: KeyRole
    prefix: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        """Whether the key still opens the gateway."""
        return self.revoked_at is None


@dataclass(frozen=True)
class KeyDigest:
    """An active key as the auth check needs it: its id, role and SHA-256 digest (32 bytes)."""

    id: int
    role: KeyRole
    digest: bytes


@dataclass(frozen=True)
class KeySnapshot:
    """Every active key, and whether any key was ever created (auth is on once one was, so
    revoking the last key does not open the gateway)."""

    enabled: bool
    active: tuple[KeyDigest, ...]


@dataclass(frozen=True)
class AuthContext:
    """What the gateway's auth check found for a request (``request.state.auth``): whether auth
    is on, and the role and id of the key presented (None when auth is off or the route is
    open)."""

    enabled: bool
    role: KeyRole | None = None
    key_id: int | None = None


def key_digest(key: str) -> bytes:
    """The SHA-256 digest of a key (what is stored, hex-encoded)."""
    return hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).digest()


def _key_of(row: Row[object]) -> ApiKey:
    return ApiKey(
        id=int(row.id),
        name=row.name,
        role=KeyRole(row.role),
        prefix=str(row.prefix),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )


def create_key(store: Store, role: KeyRole, name: str | None = None) -> tuple[ApiKey, str]:
    """Create a key; returns its listing and the full key (shown once, never stored)."""
    key = KEY_PREFIX + secrets.token_urlsafe(KEY_BYTES)
    with store.engine.begin() as conn:
        result = conn.execute(
            t.api_keys.insert().values(
                name=name,
                role=role.value,
                prefix=key[:SHOWN_CHARS],
                digest=key_digest(key).hex(),
                created_at=t.utcnow(),
            )
        )
        inserted = result.inserted_primary_key
        assert inserted is not None  # an INSERT of one row always has a primary key
        row = conn.execute(sa.select(t.api_keys).where(t.api_keys.c.id == inserted[0])).one()
    return _key_of(row), key


def list_keys(store: Store) -> list[ApiKey]:
    """Every key ever created, oldest first (revoked ones included)."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.select(t.api_keys).order_by(t.api_keys.c.id)).all()
    return [_key_of(row) for row in rows]


def revoke_key(store: Store, which: str) -> ApiKey:
    """Revoke the active key whose id, name or shown prefix is ``which``; returns it revoked.

    Raises ``NotFound`` when none matches and ``InvalidRequest`` when a name or prefix matches
    several keys (give the id then).
    """
    matches = [
        key
        for key in list_keys(store)
        if key.active and which in (str(key.id), key.name, key.prefix)
    ]
    if not matches:
        raise NotFound(f"no active key with id, name or prefix {which!r}")
    if len(matches) > 1:
        ids = ", ".join(str(key.id) for key in matches)
        raise InvalidRequest(f"{which!r} matches keys {ids}; revoke one by its id")
    with store.engine.begin() as conn:
        conn.execute(
            t.api_keys.update()
            .where(t.api_keys.c.id == matches[0].id)
            .values(revoked_at=t.utcnow())
        )
        row = conn.execute(sa.select(t.api_keys).where(t.api_keys.c.id == matches[0].id)).one()
    return _key_of(row)


def key_snapshot(store: Store) -> KeySnapshot:
    """The active keys' digests, for the gateway's cached auth check."""
    with without_waiting_for_calls(), store.engine.connect() as conn:
        rows = conn.execute(
            sa.select(
                t.api_keys.c.id, t.api_keys.c.role, t.api_keys.c.digest, t.api_keys.c.revoked_at
            )
        ).all()
    active = tuple(
        KeyDigest(int(row.id), KeyRole(row.role), bytes.fromhex(row.digest))
        for row in rows
        if row.revoked_at is None
    )
    return KeySnapshot(enabled=bool(rows), active=active)
