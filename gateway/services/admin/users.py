"""Console users: create, authenticate, change roles."""
from __future__ import annotations

from sqlalchemy import select
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ROLES, User


def create_user(email: str, password: str, role: str = "member", *, team_id: int | None = None,
                exists_ok: bool = True) -> User:
    """Create a user, or (exists_ok) update the one with this email; scrypt-hashed password.
    The console passes exists_ok=False so that it can't reset someone's password by accident."""
    email = email.strip().lower()
    user = db.session.scalar(select(User).where(User.email == email))
    if user is not None and not exists_ok:
        raise InvalidRequest("A user with this email exists already.", param="email")
    if "@" not in email:
        raise InvalidRequest("enter a valid email address", param="email")
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if len(password) < 8:
        raise InvalidRequest("the password needs at least 8 characters", param="password")
    if user is None:
        user = User(email=email)
        db.session.add(user)
    user.password_hash = generate_password_hash(password)
    user.role = role
    user.active = True
    if team_id is not None:
        user.team_id = team_id
    db.session.commit()
    return user


def all_users() -> list[User]:
    return db.session.scalars(select(User).order_by(User.email)).all()


def check_login(email: str, password: str) -> User | None:
    user = db.session.scalar(select(User).where(User.email == email.strip().lower()))
    if user and user.active and check_password_hash(user.password_hash, password):
        return user
    return None


def _admins_left(excluding: User) -> int:
    from sqlalchemy import func
    return db.session.scalar(select(func.count()).select_from(User).where(
        User.role == "admin", User.active, User.id != excluding.id))


def set_role(user: User, role: str) -> User:
    """Change a user's role; the last active admin keeps theirs."""
    if role not in ROLES:
        raise InvalidRequest(f"role must be one of {', '.join(ROLES)}", param="role")
    if user.role == "admin" and role != "admin" and user.active and not _admins_left(user):
        raise InvalidRequest("the last admin can't lose the admin role", param="role")
    user.role = role
    db.session.commit()
    return user


def set_active(user: User, active: bool) -> User:
    """Revoke or restore a user's console access; the last active admin stays."""
    if not active and user.role == "admin" and user.active and not _admins_left(user):
        raise InvalidRequest("the last admin can't be deactivated", param="active")
    user.active = active
    db.session.commit()
    return user


def set_team(user: User, team_id: int | None) -> User:
    """Move a user to a team (None: no team); their new keys are the team's."""
    user.team_id = team_id
    db.session.commit()
    return user
