"""Login throttling kept in the database, so every worker process counts the same failures."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, func, select

from gateway.extensions import db
from gateway.models import LoginFailure, utcnow

WINDOW = timedelta(minutes=15)
PER_EMAIL = 5       # failures for one account within WINDOW
PER_IP = 20         # failures from one address within WINDOW, across accounts


def blocked(email: str, ip: str) -> bool:
    """True while too many recent failures name this email or come from this address."""
    since = utcnow() - WINDOW
    by_email = db.session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.email == email, LoginFailure.at > since))
    if by_email >= PER_EMAIL:
        return True
    by_ip = db.session.scalar(select(func.count()).select_from(LoginFailure).where(
        LoginFailure.ip == ip, LoginFailure.at > since))
    return by_ip >= PER_IP


def failed(email: str, ip: str) -> None:
    db.session.add(LoginFailure(email=email[:255], ip=ip[:64]))
    db.session.execute(delete(LoginFailure).where(LoginFailure.at < utcnow() - 4 * WINDOW))
    db.session.commit()


def succeeded(email: str) -> None:
    db.session.execute(delete(LoginFailure).where(LoginFailure.email == email))
    db.session.commit()
