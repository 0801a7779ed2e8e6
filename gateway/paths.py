"""Where the app's files are (templates, static) and where its data lives (the instance folder),
in a source checkout and when installed from the wheel."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def installed(package: Path = PACKAGE) -> bool:
    """True when running from the wheel, which maps templates/ and static/ inside the package."""
    return (package / "templates").is_dir()


def asset_folder(name: str, package: Path = PACKAGE) -> str:
    """templates/ or static/: inside the package when installed, next to it in a checkout."""
    return str((package if installed(package) else package.parent) / name)


def instance_path(explicit: str | None = None, package: Path = PACKAGE) -> str:
    """The instance folder (secrets, usage spool, the default SQLite database), absolute:
    `explicit` (GATEWAY_INSTANCE_PATH), else instance/ in a checkout, else the user's data dir."""
    if explicit:
        return str(Path(explicit).expanduser().resolve())
    if not installed(package):
        return str(package.parent / "instance")
    # Lazy: only an installed gateway without GATEWAY_INSTANCE_PATH needs it.
    from platformdirs import user_data_dir
    return user_data_dir("gateway", appauthor=False)
