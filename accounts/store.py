"""The token store: `tokens/tokens.json` (mode 0600, in a 0700 directory) beside secrets.toml.

Theory of operation. Per account it keeps the refresh token encrypted with AES-GCM
(`cryptography`), the account name as associated data (a record copied to another
account does not decrypt), and the account's state for `account show` (ok, or what the
last failure was and what to do), and the current access token, sealed the same way
(never plaintext; see "Worker processes" below).

Keys. A listener account (`protect = "secrets"`) is encrypted with a random 256-bit key
kept in secrets.toml (`[accounts] key`): the service can refresh it unattended, and
tokens.json alone (a backup, a copied disk image without secrets.toml) yields nothing. A
per-person account (`protect = "password"`) is encrypted with a key derived from the
owner's local password (argon2id, a salt per record): the service can decrypt it only
while that person logs in, and a stolen disk yields nothing usable without the password.
A wrong key or password gives `WrongKey`, never garbage.

Concurrency: the CLI and the service both write; each change is a read-modify-write
under an exclusive `flock` on `tokens.json.lock`, replaced atomically (temp file, fsync,
rename; 0600).

Worker processes. Workers (`workers` > 1) share one store and must behave like one process: one
token request per expiry, and never two refreshes with the same (rotating) refresh
token, where the loser would get `invalid_grant`. So the current access token is kept
here too, sealed with the same key as the refresh token (`access`: AES-GCM over a JSON
of token and expiry, associated data `mailtee-access:NAME`; never plaintext), and
a refresh happens only inside `refreshing(name)`: an exclusive `flock` on
`tokens/refresh-<hash of name>.lock`, held across the token request, inside which the
record is read again -- a worker that waited finds the token another one just stored
and asks nobody. The refresh lock is per account (one slow provider does not hold up
the others) and separate from `tokens.json.lock` (held only for the short write, so the
CLI never waits for a provider). Chosen over having the supervisor refresh for its
workers: no new control-socket protocol, and it keeps working for the CLI and for a
worker whose supervisor is busy or restarting.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import secrets as pysecrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from accounts.errors import AccountError
from archive.durable import fsync_dir, write_atomic
from archive.timefmt import now_iso

STORE_DIR = "tokens"
STORE_NAME = "tokens.json"
KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16
#: argon2id for the per-person key (RFC 9106 second recommended option: 64 MiB, t=3)
KDF_TIME_COST = 3
KDF_MEMORY_KIB = 64 * 1024
KDF_PARALLELISM = 1


class StoreError(AccountError):
    """The token store cannot be read or written; one line."""


class WrongKey(StoreError):
    """The key (or local password) does not decrypt this account's token."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode())


def new_key() -> str:
    """A fresh store key for secrets.toml (`[accounts] key`), base64."""
    return _b64(pysecrets.token_bytes(KEY_BYTES))


def password_key(password: str, salt: bytes) -> bytes:
    """argon2id(password, salt) -> 32 bytes. Blocking (~0.1 s): use a worker thread."""
    return hash_secret_raw(
        password.encode(),
        salt,
        time_cost=KDF_TIME_COST,
        memory_cost=KDF_MEMORY_KIB,
        parallelism=KDF_PARALLELISM,
        hash_len=KEY_BYTES,
        type=Type.ID,
    )


def _aad(name: str, kind: str = "token") -> bytes:
    # `kind` keeps a sealed access token from being passed off as the refresh token
    return f"mailtee-{kind}:{name}".encode()


def seal(name: str, key: bytes, plaintext: str, kind: str = "token") -> dict[str, str]:
    nonce = pysecrets.token_bytes(NONCE_BYTES)
    ct = AESGCM(key).encrypt(nonce, plaintext.encode(), _aad(name, kind))
    return {"nonce": _b64(nonce), "ct": _b64(ct)}


def unseal(name: str, key: bytes, record: dict[str, Any], kind: str = "token") -> str:
    try:
        pt = AESGCM(key).decrypt(_unb64(record["nonce"]), _unb64(record["ct"]), _aad(name, kind))
    except (InvalidTag, KeyError, ValueError, TypeError):
        raise WrongKey(f"account {name}: the stored token does not decrypt with this key") from None
    return pt.decode()


def store_key(secret: str) -> bytes:
    try:
        key = _unb64(secret)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise StoreError("secrets.toml: [accounts] key is not a base64 256-bit key")
    return key


class TokenStore:
    def __init__(self, path: Path, owner_of: Path | None = None) -> None:
        self.path = path
        #: as root, new store files get this file's owner (secrets.toml's: the service user)
        self.owner_of = owner_of

    @classmethod
    def beside(cls, secrets_file: Path) -> TokenStore:
        """`tokens/tokens.json` in the folder of secrets.toml. A directory of its own: the
        service's sandbox (ProtectSystem=strict) makes /etc/mailtee read-only except for
        this directory, which it must rewrite (rotated refresh tokens, account state)."""
        return cls(secrets_file.parent / STORE_DIR / STORE_NAME, owner_of=secrets_file)

    # --- file ---------------------------------------------------------------------
    def load(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise StoreError(f"{self.path}: cannot read: {type(e).__name__}") from None
        accounts = data.get("accounts") if isinstance(data, dict) else None
        return accounts if isinstance(accounts, dict) else {}

    @contextlib.contextmanager
    def _locked(self, lock: Path | None = None) -> Iterator[None]:
        lock = lock or self.path.with_name(self.path.name + ".lock")
        try:
            if not self.path.parent.is_dir():
                self.path.parent.mkdir(mode=0o700, parents=True)
                self._same_owner(self.path.parent)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise StoreError(f"{lock}: cannot open: {e.strerror}") from None
        try:
            self._same_owner(lock)
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _same_owner(self, path: Path) -> None:
        """As root (the CLI), give new store files the owner of secrets.toml: the service
        runs as `mailtee` and must be able to read and rewrite them."""
        if os.geteuid() != 0 or self.owner_of is None:
            return
        try:
            ref = self.owner_of.stat()
            st = path.stat()
            if (st.st_uid, st.st_gid) != (ref.st_uid, ref.st_gid):
                os.chown(path, ref.st_uid, ref.st_gid)
        except OSError:
            pass

    def update(self, name: str, change: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Replace account `name`'s record by `change(old)` (None removes it)."""
        with self._locked():
            accounts = self.load()
            new = change(dict(accounts.get(name) or {}))
            if new is None:
                accounts.pop(name, None)
            else:
                accounts[name] = new
            body = json.dumps({"version": 1, "accounts": accounts}, indent=1, sort_keys=True)
            try:
                write_atomic(self.path, body.encode() + b"\n", 0o600)
                # the rename itself durable: a rotated refresh token lost in a power
                # cut would leave only the old, now revoked, one
                fsync_dir(self.path.parent)
            except OSError as e:
                raise StoreError(f"{self.path}: cannot write: {e.strerror}") from None
            self._same_owner(self.path)

    def refreshing(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Hold account `name`'s refresh lock (blocking: call in a worker thread). Every
        process that refreshes this account's token does it inside; see the top."""
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return self._locked(self.path.with_name(f"refresh-{digest}.lock"))

    def get(self, name: str) -> dict[str, Any]:
        return dict(self.load().get(name) or {})

    # --- records ------------------------------------------------------------------
    def save_refresh(
        self, name: str, key: bytes, refresh_token: str | None, *, salt: bytes | None = None
    ) -> None:
        """Store a new (or rotated) refresh token, encrypted; the state becomes ok."""

        def change(old: dict[str, Any]) -> dict[str, Any]:
            rec = {k: v for k, v in old.items() if k in ("signed_in_at",)}
            if refresh_token is not None:
                rec.update(seal(name, key, refresh_token))
            if salt is not None:
                rec["salt"] = _b64(salt)
            elif "salt" in old:
                rec["salt"] = old["salt"]
            rec.setdefault("signed_in_at", now_iso(digits=0))
            rec.update(state="ok", message="", updated_at=now_iso(digits=0))
            return rec

        self.update(name, change)

    def mark_signed_in(self, name: str) -> None:
        self.update(name, lambda old: {**old, "signed_in_at": now_iso(digits=0)})

    def set_state(self, name: str, state: str, message: str) -> None:
        """Record a failure (or recovery) for `account show`; tokens stay as they are."""

        def change(old: dict[str, Any]) -> dict[str, Any] | None:
            if not old and state == "ok":
                return None
            return {
                **old,
                "state": state,
                "message": message[:300],
                "updated_at": now_iso(digits=0),
            }

        self.update(name, change)

    def save_tokens(
        self,
        name: str,
        key: bytes,
        used: dict[str, Any],
        access: dict[str, Any],
        refresh_token: str | None,
    ) -> bool:
        """After a refresh: store the access token `access` (a JSON-able dict) sealed,
        and a rotated refresh token, state ok. `used` is the record the refresh started
        from; if its refresh token was replaced meanwhile (an `account reauth`), the new
        sign-in wins and nothing is written (returns False)."""  # fmt: skip
        written = [False]

        def change(old: dict[str, Any]) -> dict[str, Any] | None:
            if old.get("ct") != used.get("ct") or old.get("salt") != used.get("salt"):
                return old or None
            rec = dict(old)
            if refresh_token is not None:
                rec.update(seal(name, key, refresh_token))
            rec["access"] = seal(name, key, json.dumps(access), "access")
            rec.update(state="ok", message="", updated_at=now_iso(digits=0))
            written[0] = True
            return rec

        self.update(name, change)
        return written[0]

    @staticmethod
    def access_of(name: str, key: bytes, record: dict[str, Any]) -> dict[str, Any] | None:
        """The access token stored in `record` (see `save_tokens`), or None."""
        sealed = record.get("access")
        if not isinstance(sealed, dict):
            return None
        data = json.loads(unseal(name, key, sealed, "access"))
        return data if isinstance(data, dict) else None

    def refresh_token(self, name: str, key: bytes) -> str | None:
        rec = self.get(name)
        if "ct" not in rec:
            return None
        return unseal(name, key, rec)

    def salt(self, name: str) -> bytes | None:
        rec = self.get(name)
        return _unb64(rec["salt"]) if "salt" in rec else None

    def remove(self, name: str) -> None:
        self.update(name, lambda old: None)
