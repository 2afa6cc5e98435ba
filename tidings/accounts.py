"""Marketer accounts: creation and argon2 password checks."""

from __future__ import annotations

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from tidings.errors import ConflictError, InvalidError
from tidings.models import Account, Role

_hasher = PasswordHasher()
MIN_PASSWORD = 8


def create_account(session: Session, email: str, role: str, password: str) -> Account:
    email = email.strip().lower()
    if "@" not in email or len(email) > 320:
        raise InvalidError(f'"{email}" is not an email address', {"field": "email"})
    if role not in {r.value for r in Role}:
        raise InvalidError(f'role must be one of {", ".join(r.value for r in Role)}', {"field": "role"})
    if len(password) < MIN_PASSWORD:
        raise InvalidError(f"the password needs at least {MIN_PASSWORD} characters", {"field": "password"})
    if session.scalar(sa.select(Account.id).where(Account.email == email)) is not None:
        raise ConflictError(f"an account for {email} exists already", {"field": "email"})
    account = Account(email=email, role=role, password_hash=_hasher.hash(password), active=True)
    session.add(account)
    session.flush()
    return account


def check_password(session: Session, email: str, password: str) -> Account | None:
    account = session.scalar(sa.select(Account).where(Account.email == email.strip().lower()))
    if account is None or not account.active:
        _hasher.hash(password)  # same cost whether or not the account exists
        return None
    try:
        _hasher.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return account
