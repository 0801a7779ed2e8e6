"""Instance secrets (session key, encryption key) and provider-key encryption at rest."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from flask import Flask, current_app


def _instance_secret(app: Flask, filename: str, make) -> str:
    """Read a secret from instance/, creating it once; O_EXCL so concurrent starts agree."""
    path = Path(app.instance_path) / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        value = make()
        f.write(value)
    return value


def init_app(app: Flask) -> None:
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret(app, "secret_key", lambda: secrets.token_urlsafe(48))
    if not app.config.get("ENCRYPTION_KEY"):
        app.config["ENCRYPTION_KEY"] = _instance_secret(
            app, "encryption_key", lambda: Fernet.generate_key().decode())
    app.extensions["fernet"] = Fernet(app.config["ENCRYPTION_KEY"].encode())


def encrypt(plain: str) -> str:
    return current_app.extensions["fernet"].encrypt(plain.encode()).decode() if plain else ""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return current_app.extensions["fernet"].decrypt(token.encode()).decode()
    except InvalidToken:
        raise RuntimeError("cannot decrypt a provider key: GATEWAY_ENCRYPTION_KEY changed?") from None
