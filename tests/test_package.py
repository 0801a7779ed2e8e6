"""The installable package: where files and data live, `gateway serve`, and the built wheel
served from a fresh venv by a non-root user in an empty folder (the container's steps)."""
from __future__ import annotations

import os
import pwd
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, Request, build_opener

import pytest

from gateway import create_app, gunicorn_conf, paths
from gateway.bootstrap import announce
from tests.helpers import ROOT, free_port, stop_process

TEST_USER = "gateway-test"


def fake_package(root: Path, wheel: bool) -> Path:
    """A gateway/ folder laid out as in a checkout (templates/ beside it) or as installed."""
    package = root / "gateway"
    (package / "templates" if wheel else root / "templates").mkdir(parents=True)
    return package


def test_checkout_finds_assets_and_instance_beside_the_package(tmp_path):
    package = fake_package(tmp_path, wheel=False)
    assert paths.asset_folder("templates", package) == str(tmp_path / "templates")
    assert paths.asset_folder("static", package) == str(tmp_path / "static")
    assert paths.instance_path(None, package) == str(tmp_path / "instance")


def test_installed_finds_assets_inside_and_keeps_data_in_the_user_data_dir(tmp_path, monkeypatch):
    package = fake_package(tmp_path / "site-packages", wheel=True)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.asset_folder("static", package) == str(package / "static")
    assert paths.instance_path(None, package) == str(tmp_path / "xdg" / "gateway")


def test_instance_path_from_the_environment_may_be_relative(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GATEWAY_INSTANCE_PATH", "data")
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///gateway.db"})
    assert app.instance_path == str(tmp_path / "data") and (tmp_path / "data" / "secret_key").is_file()
    with app.app_context():
        lines: list[str] = []
        announce(lines.append)
    assert f"sqlite:///{tmp_path}/data/gateway.db" in "\n".join(lines)


def test_the_database_url_is_printed_with_its_password_masked(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://gw:s3cret-pw@db.internal:5432/gw"},
                     instance_path=str(tmp_path))
    with app.app_context():
        lines: list[str] = []
        announce(lines.append)      # renders the URL only: nothing connects
    text = "\n".join(lines)
    assert "s3cret-pw" not in text and "gw:***@db.internal:5432/gw" in text
    assert f"Instance folder: {tmp_path}" in text


def _variables_the_code_reads() -> set[str]:
    """Environment variables named in gateway/: os.environ lookups, and GATEWAY_<NAME> for every
    app setting (gateway/config.py's defaults and the names read from app.config)."""
    from gateway.config import Defaults
    fixed = {"MAX_CONTENT_LENGTH", "SQLALCHEMY_DATABASE_URI", "SQLALCHEMY_ENGINE_OPTIONS",   # set by the app
             "SESSION_COOKIE_HTTPONLY", "SESSION_COOKIE_SAMESITE", "CONFIG_FILE", "REDIS_URL"}
    names, settings = set(), {n for n in vars(Defaults) if n.isupper()}
    for path in (ROOT / "gateway").rglob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r'os\.environ(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]*)"', text))
        settings |= set(re.findall(r'config(?:\.get\(|\[)\s*"([A-Z][A-Z0-9_]*)"', text))
    return names | {"GATEWAY_" + n for n in settings - fixed}


def test_every_environment_variable_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Configuration\n")[1].split("\n## ")[0]
    missing = sorted(n for n in _variables_the_code_reads() if f"`{n}`" not in section)
    assert not missing, f"add to the README's Configuration table: {missing}"


def serve(tmp_path, monkeypatch, *args, **env) -> tuple[list[str], str]:
    """Run `gateway serve ARGS` up to its exec: gunicorn's argv, and what it printed."""
    monkeypatch.setenv("GATEWAY_SKIP_BOOTSTRAP", "0")      # serve sets it; restored after the test
    for name in ("HOST", "PORT", "GATEWAY_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    execs: list[list[str]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: execs.append(argv))
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/s.db"}, instance_path=str(tmp_path))
    r = app.test_cli_runner().invoke(args=["serve", *args])
    assert r.exit_code == 0, r.output
    assert os.environ["GATEWAY_SKIP_BOOTSTRAP"] == "1"      # bootstrapped here, not again in gunicorn
    return execs[0], r.output


def test_serve_listens_on_loopback_by_default(tmp_path, monkeypatch):
    argv, out = serve(tmp_path, monkeypatch)
    assert argv[argv.index("-b") + 1] == "127.0.0.1:8080" and argv[-1] == "gateway.wsgi:app"
    assert "curl http://127.0.0.1:8080/v1/chat/completions" in out and "every interface" not in out
    assert f"Database: sqlite:///{tmp_path}/s.db" in out


def test_serve_opens_up_only_when_asked(tmp_path, monkeypatch):
    argv, out = serve(tmp_path, monkeypatch, "--host", "0.0.0.0", "--port", "9123")
    assert argv[argv.index("-b") + 1] == "0.0.0.0:9123"
    assert "curl http://127.0.0.1:9123/v1/" in out and "every interface, port 9123" in out


def test_serve_takes_host_and_port_from_the_environment(tmp_path, monkeypatch):
    argv, out = serve(tmp_path, monkeypatch, HOST="::1", PORT="9124", WEB_CONCURRENCY="3")
    assert argv[argv.index("-b") + 1] == "[::1]:9124" and argv[argv.index("-w") + 1] == "3"
    assert "curl http://[::1]:9124/v1/" in out


def test_serve_refuses_a_bad_port(tmp_path, monkeypatch):
    monkeypatch.setenv("PORT", "eighty")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/s.db"}, instance_path=str(tmp_path))
    r = app.test_cli_runner().invoke(args=["serve"])
    assert r.exit_code == 2 and "Invalid value for '--port'" in r.output


def test_gunicorn_alone_bootstraps_from_any_folder(tmp_path, monkeypatch):
    """`gunicorn -c python:gateway.gunicorn_conf gateway.wsgi:app` run outside the checkout."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/g.db")
    monkeypatch.setenv("GATEWAY_INSTANCE_PATH", str(tmp_path / "instance"))
    monkeypatch.setenv("PYTHONPATH", str(ROOT))     # this checkout's gateway, not the venv's
    for name in ("GATEWAY_SKIP_BOOTSTRAP", "GATEWAY_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    server = type("Arbiter", (), {"cfg": type("Config", (), {"bind": ["0.0.0.0:8181"]})()})()
    gunicorn_conf.on_starting(server)       # raises CalledProcessError when the bootstrap fails
    assert (tmp_path / "g.db").is_file() and list(empty.iterdir()) == []


def _run_as(user: pwd.struct_passwd | None) -> dict:
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} if user else {}


def _non_root_user() -> pwd.struct_passwd | None:
    """The test user (created if missing) when running as root; None when already non-root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                        "--shell", "/usr/sbin/nologin", TEST_USER], check=True, capture_output=True)
        return pwd.getpwnam(TEST_USER)


def _python_for(user: pwd.struct_passwd | None) -> str:
    """An interpreter of this version that `user` may run (a pyenv build under /root is not one)."""
    version = "%d.%d" % sys.version_info[:2]
    for candidate in (sys._base_executable, sys.executable, f"/usr/bin/python{version}",
                      f"/usr/local/bin/python{version}"):
        try:
            r = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                               capture_output=True, text=True, **_run_as(user))
        except OSError:         # missing, or not for this user to run
            continue
        if r.returncode == 0 and r.stdout.strip() == version:
            return candidate
    pytest.skip(f"no Python {version} that {user.pw_name if user else 'this user'} may run")


def _wheel_members_cover_the_assets(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    needed = [f"gateway/{p.relative_to(ROOT).as_posix()}" for folder in ("templates", "static")
              for p in (ROOT / folder).rglob("*") if p.is_file()]
    needed += [f"gateway/migrations/{p.relative_to(ROOT / 'gateway' / 'migrations').as_posix()}"
               for p in (ROOT / "gateway" / "migrations").rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    missing = [n for n in needed if n not in names]
    assert not missing, f"missing from the wheel: {missing}"


class Browser:
    """HTTP through urllib with a cookie jar. urllib sends `Connection: close`, so no idle
    keep-alive connection keeps gunicorn's graceful stop waiting."""

    def __init__(self, base: str):
        self.base = base
        self.opener = build_opener(HTTPCookieProcessor(CookieJar()))

    def __call__(self, path: str, json_body: dict | None = None, form: dict | None = None,
                 headers: dict | None = None) -> tuple[int, str, str]:
        """GET, or POST `json_body` or `form` (with the Origin a browser sends): status, body, final URL."""
        headers = {"Origin": self.base, **(headers or {})}
        data = None
        if json_body is not None:
            data, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            data = urlencode(form).encode()
        try:
            with self.opener.open(Request(self.base + path, data=data, headers=headers), timeout=10) as r:
                return r.status, r.read().decode(), r.url
        except HTTPError as e:
            with e:
                return e.code, e.read().decode(), e.url


def _linked_copy(src: Path, dst: Path) -> Path:
    """`src` under `dst`, hard-linked file by file (cheap; a copy across file systems)."""
    def link(a, b):
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)
    shutil.copytree(src, dst, copy_function=link, symlinks=True)
    return dst


@pytest.fixture(scope="module")
def installed_wheel():
    """The built wheel installed into a fresh venv, and the user to run it as: (folder, venv, user).

    Only the wheel goes into the venv; its dependencies come from this environment's
    site-packages (a path line in a .pth file), so no package index is needed. The folder is
    not pytest's tmp_path, which is private to root: the test user must walk into it."""
    pytest.importorskip("hatchling", reason="the test extras build the wheel: pip install -e '.[test]'")
    user = _non_root_user()
    work = Path(tempfile.mkdtemp(prefix="gw-package-"))
    work.chmod(0o755)
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(work / "dist"), str(ROOT)], check=True, capture_output=True, timeout=120)
        wheel = next((work / "dist").glob("gateway-*.whl"))
        _wheel_members_cover_the_assets(wheel)
        venv = work / "venv"
        subprocess.run([_python_for(user), "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
        subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                        "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True, timeout=120)
        site = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
        if user is not None:    # the checkout may sit in a folder only root can enter (mktemp -d)
            deps = [_linked_copy(Path(d), work / f"deps{i}") for i, d in enumerate(deps)]
        Path(site, "zz_test_dependencies.pth").write_text("\n".join(map(str, deps)) + "\n")
        yield work, venv, user
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.mark.package
@pytest.mark.parametrize("setup", ["image", "new-user"])
def test_the_wheel_serves_the_console_and_the_demo_from_an_empty_folder(installed_wheel, setup):
    """`gateway serve` from the installed wheel, as a non-root user in an empty folder, with a
    clean environment: as the Dockerfile runs it (GATEWAY_INSTANCE_PATH=/data, HOST, PORT; here
    HOST=127.0.0.1, tests listen on loopback only), and as a new user after `pip install .`."""
    work, venv, user = installed_wheel
    run = work / setup
    home, empty, data = run / "home", run / "empty", run / "data"
    run.mkdir()
    for folder in (home, empty, data):
        folder.mkdir()
        if user:
            os.chown(folder, user.pw_uid, user.pw_gid)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
           "PORT": str(port), "WEB_CONCURRENCY": "1"}
    if setup == "image":
        env.update(GATEWAY_INSTANCE_PATH=str(data), HOST="127.0.0.1")
        instance = data
    else:
        instance = home / ".local" / "share" / "gateway"       # an installed gateway's default
    with open(run / "serve.log", "w") as log:
        server = subprocess.Popen([str(venv / "bin" / "gateway"), "serve"], cwd=empty, env=env,
                                  stdout=log, stderr=subprocess.STDOUT, **_run_as(user))
    browse = Browser(base)
    try:
        deadline = time.monotonic() + 40
        while True:
            try:
                status, login, _ = browse("/login")
                break
            except (URLError, ConnectionError):
                assert server.poll() is None and time.monotonic() < deadline, (run / "serve.log").read_text()
                time.sleep(0.2)
        out = (run / "serve.log").read_text()

        assert status == 200 and "<form" in login, out
        assert browse(re.search(r'href="([^"]*app\.css[^"]*)"', login)[1])[0] == 200
        assert browse("/static/vendor/htmx-2.0.11.min.js")[0] == 200

        secret = re.search(r"Demo key \(shown once\): (\S+)", out)[1]
        assert f"curl {base}/v1/chat/completions" in out
        status, body, _ = browse("/v1/chat/completions", json_body={"model": "demo-chat", "messages": [
            {"role": "user", "content": "Hello!"}]}, headers={"Authorization": f"Bearer {secret}"})
        assert status == 200 and json.loads(body)["choices"][0]["message"]["content"] == "Echo: Hello!"

        password = re.search(r"password: (\S+)", out)[1]
        token = re.search(r'name="csrf_token" value="([^"]+)"', login)[1]
        status, page, url = browse("/login", form={"csrf_token": token, "email": "admin@localhost",
                                                   "password": password})
        assert status == 200 and url == base + "/" and "admin@localhost" in page

        assert f"Instance folder: {instance}" in out and f"Database: sqlite:///{instance}/gateway.db" in out
        assert (instance / "gateway.db").is_file() and list(empty.iterdir()) == []
        if user:
            assert (instance / "gateway.db").stat().st_uid == user.pw_uid
    finally:
        stop_process(server)
