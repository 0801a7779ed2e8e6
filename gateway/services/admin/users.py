"""Console users: create, find, authenticate, change roles, end sessions, disable, delete."""
from __future__ import annotations

import functools
import secrets

from sqlalchemy import func, select
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ROLES, ApiKey, User
from gateway.services.accounting import keys

KEEP, REVOKE = "keep", "revoke"         # what delete_user does with the user's keys


def create_user(email: str, password: str, role: str = "member", *, team_id: int | None = None,
                exists_ok: bool = True) -> User:
    """Create a user, or (exists_ok) update the one with this email; scrypt-hashed password.
    The console passes exists_ok=False so that it can't reset someone's password by accident."""
    email = email.strip().lower()
    user = user_named(email)
    if user is not None and not exists_ok:
        raise InvalidRequest("A user with this email exists already.", param="email")
    if "@" not in email:
        raise InvalidRequest("enter a valid email address", param="email")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    _check_password(password)
    if user is None:
        user = User(email=email)
        db.session.add(user)
    else:       # a new password or role: sessions opened under the old ones end
        _bump(user)
    user.password_hash = generate_password_hash(password)
    user.role = role
    user.active = True
    if team_id is not None:
        user.team_id = team_id
    db.session.commit()
    return user


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise InvalidRequest("the password needs at least 8 characters", param="password")


def change_password(user: User, current: str, new: str) -> User:
    """A user's own password change: the current one must be right. Every session of the user
    ends; the caller logs the one making the change in again."""
    if not check_password_hash(user.password_hash, current):
        raise InvalidRequest("That is not your current password.", param="current_password")
    _check_password(new)
    user.password_hash = generate_password_hash(new)
    _bump(user)
    db.session.commit()
    return user


def all_users() -> list[User]:
    return db.session.scalars(select(User).order_by(User.email)).all()


@functools.cache
def _dummy_hash() -> str:
    """A hash of the default kind, checked for unknown emails so that they take as long."""
    return generate_password_hash(secrets.token_urlsafe(16))


def user_named(email: str) -> User | None:
    """The user with this email (any case), if there is one."""
    return db.session.scalar(select(User).where(User.email == email.strip().lower()))


def find_user(email: str) -> User:
    """The user with this email (any case), or InvalidRequest."""
    user = user_named(email)
    if user is None:
        raise InvalidRequest(f"No user {email}.", param="email")
    return user


def check_login(email: str, password: str) -> User | None:
    """The active user with this email and password, else None. The same hash work is done for
    an unknown email or a disabled user, so the answer's timing tells nothing about either."""
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    ok = check_password_hash(user.password_hash if user else _dummy_hash(), password)
    return user if ok and user is not None and user.active else None


def session_user(user_id: str) -> User | None:
    """The user a login session names ("id:version"), while that session is still valid."""
    uid, _, version = user_id.partition(":")
    if not uid.isdigit() or not version.isdigit():
        return None         # a session from before versions, or forged: log in again
    user = db.session.get(User, int(uid))
    if user is None or not user.active or (user.session_version or 0) != int(version):
        return None
    return user


def end_sessions(user: User) -> User:
    """End every login session of `user`, in every browser and process."""
    _bump(user)
    db.session.commit()
    return user


def _bump(user: User) -> None:
    user.session_version = (user.session_version or 0) + 1


def _admins_left(excluding: User) -> int:
    return db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active, User.id != excluding.id))


def _is_last_admin(user: User) -> bool:
    return user.role == "admin" and user.active and not _admins_left(user)


def set_role(user: User, role: str) -> User:
    """Change a user's role; the last active admin keeps theirs."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if user.role == "admin" and role != "admin" and user.active and not _admins_left(user):
        raise InvalidRequest("the last admin can't lose the admin role", param="role")
    if role != user.role:
        _bump(user)
    user.role = role
    db.session.commit()
    return user


def set_active(user: User, active: bool) -> User:
    """Revoke or restore a user's console access; the last active admin stays."""
    if not active and user.role == "admin" and user.active and not _admins_left(user):
        raise InvalidRequest("the last admin can't be deactivated", param="active")
    if not active:
        _bump(user)
    user.active = active
    db.session.commit()
    return user


def set_team(user: User, team_id: int | None) -> User:
    """Move a user to a team (None: no team); their new keys are the team's."""
    user.team_id = team_id
    db.session.commit()
    return user


def live_keys(user: User) -> list[ApiKey]:
    """The user's keys not revoked (a disabled or expired key can be turned back on)."""
    return db.session.scalars(select(ApiKey).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None))
                              .order_by(ApiKey.id)).all()


def check_delete(user: User, their_keys: str | None = None) -> list[ApiKey]:
    """Raise InvalidRequest unless delete_user(user, their_keys) may go ahead; the user's keys
    not revoked. The last active admin stays, and keys that still work need a decision."""
    if _is_last_admin(user):
        raise InvalidRequest("the last admin can't be deleted", param="email")
    live = live_keys(user)
    if live and their_keys not in (KEEP, REVOKE):
        raise InvalidRequest(f"{user.email} owns {len(live)} key(s) not revoked; say whether to "
                             f"{REVOKE} them or {KEEP} them", param="keys")
    return live


def delete_user(user: User, their_keys: str | None = None) -> list[ApiKey]:
    """Delete a user (see check_delete). Their keys not revoked are REVOKEd, or KEPT with their
    team, owned by no one, so none keeps working unnoticed. Returns those keys."""
    live = check_delete(user, their_keys)
    for key in live if their_keys == REVOKE else ():
        keys.revoke_key(key)
    for key in live:
        key.user_id = None
    db.session.delete(user)
    db.session.commit()
    return live
