"""The gateway against LiteLLM, side by side: `make bench` (or `python bench/compare.py`).

    python bench/compare.py [--quick] [--duration 15] [--db sqlite|postgres] [--redis]
                            [--only gateway] [--soak 100000]

One nginx (Debian package) answers both with static OpenAI-shaped bodies: a chat.completion
with usage at /plain/v1, an SSE stream ending in a usage chunk at /stream/v1. LiteLLM
(bench/.venv-litellm, `make bench` installs it) runs 2 uvicorn workers with a master key and no
database: it authenticates and computes each response's cost for its callbacks, but keeps no
spend log or per-key budget (those need its Postgres). The gateway runs 2 gunicorn gevent workers
with usage records and the rollup written as in production, once with a key without limits,
once with a key that has a token quota and a USD budget. wrk drives each cell; the CPU time of
each server's processes (master and workers, from /proc) over a cell gives CPU µs per request.
Load generator, servers and nginx share the machine's cores. Every process started here is
tracked by PID and stopped at the end, on error or Ctrl-C too.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LITELLM = ROOT / "bench" / ".venv-litellm" / "bin" / "litellm"
TICK = os.sysconf("SC_CLK_TCK")
PROMPT = [{"role": "user", "content": "Say hello to the benchmark in a few words please"}]
CHAT = {"id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": "bench",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello, benchmark! Nice to meet you."},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 14, "completion_tokens": 9, "total_tokens": 23}}
WORDS = ["Hello", ",", " bench", "mark", "!", " Nice", " to", " meet", " you", "."]


def sse() -> str:
    """The stream nginx serves: one chunk per word, a finish chunk, a usage chunk, [DONE]."""
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": "bench"}
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    chunks += [{**base, "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]} for w in WORDS]
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    chunks.append({**base, "choices": [], "usage": CHAT["usage"]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


NGINX = """worker_processes 1;
error_log {tmp}/nginx-error.log warn;
pid {tmp}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path {tmp}/nginx-body;
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    location /plain/ {{ default_type application/json; return 200 '{chat}'; }}
    location /stream/ {{ default_type text/event-stream; return 200 '{stream}'; }}
  }}
}}
"""

LUA = """wrk.method = "POST"
wrk.body = [[%s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120, key: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"}), timeout=2)
            return
        except Exception as e:      # noqa: BLE001
            if getattr(e, "code", None):
                return
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not come up")


class Procs:
    """Processes started here, by PID; stopped in reverse order, whatever happens."""

    def __init__(self):
        self.items: list[subprocess.Popen] = []

    def start(self, args, **kw) -> subprocess.Popen:
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.items.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)     # its own session: only what it started
                p.wait()
        if p in self.items:
            self.items.remove(p)

    def stop_all(self) -> None:
        for p in reversed(list(self.items)):
            self.stop(p)


def tree(pid: int) -> list[int]:
    """`pid` and every process under it."""
    parents: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += parents.get(p, [])
    return out


def cpu_times(pids: list[int]) -> dict[int, float]:
    """pid -> CPU seconds (user + system) used so far."""
    out = {}
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            out[p] = (int(f[11]) + int(f[12])) / TICK
        except OSError:
            pass
    return out


def cpu_used(before: dict[int, float], root: int) -> float:
    """CPU seconds the tree under `root` used since `before` (a process gone since counts as idle)."""
    after = cpu_times(tree(root))
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def rss_mb(pids: list[int]) -> list[float]:
    out = []
    for p in pids:
        try:
            m = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{p}/status").read_text())
            out.append(int(m.group(1)) / 1024 if m else 0.0)
        except OSError:
            pass
    return out


def to_ms(v: str | None) -> float | None:
    if not v:
        return None
    num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(num) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def wrk(url: str, body: str, key: str, conns: int, duration: float, root: int | None = None) -> dict:
    """One wrk run; with `root`, the CPU of the processes under it per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % (body, key))
    before = cpu_times(tree(root)) if root else {}
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s",
                          "--timeout", "10s", "--latency", "-s", f.name, url],
                         capture_output=True, text=True).stdout
    used = cpu_used(before, root) if root else 0.0
    os.unlink(f.name)
    n = int(re.search(r"(\d+) requests in", out).group(1))
    lat = dict(re.findall(r"^\s+(50|90|99)%\s+([\d.]+\w+)", out, re.M))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(bad.group(1)) if bad else 0) + (sum(map(int, sock.groups())) if sock else 0)
    return {"requests": n, "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": to_ms(lat.get("50")), "p90": to_ms(lat.get("90")), "p99": to_ms(lat.get("99")),
            "errors": errors, "cpu_us": used / n * 1e6 if n and root else None}


def body(model: str, stream: bool) -> str:
    b = {"model": model, "messages": PROMPT, "max_tokens": 64}
    if stream:
        b |= {"stream": True, "stream_options": {"include_usage": True}}
    return json.dumps(b)


def ensure_tools() -> None:
    missing = [t for t in ("nginx", "wrk") if not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists()]
    if missing:
        if os.geteuid() != 0:
            sys.exit(f"needed: apt-get install -y nginx-light wrk (missing {missing})")
        subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light", "wrk"], check=False,
                       stdout=subprocess.DEVNULL)
        if any(not shutil.which(t) and not Path(f"/usr/sbin/{t}").exists() for t in missing):
            subprocess.run(["apt-get", "update", "-q"], check=True, stdout=subprocess.DEVNULL)
            subprocess.run(["apt-get", "install", "-y", "-q", "nginx-light", "wrk"], check=True,
                           stdout=subprocess.DEVNULL)


def start_nginx(procs: Procs, tmp: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    (tmp / "nginx-body").mkdir()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX.format(tmp=tmp, port=port, chat=json.dumps(CHAT), stream=sse()))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = procs.start([nginx, "-p", str(tmp), "-c", str(conf), "-g", "daemon off;"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up = f"http://127.0.0.1:{port}"
    wait_http(up + "/plain/v1/chat/completions")
    return p, up


def start_litellm(procs: Procs, tmp: Path, up: str, workers: int) -> tuple[subprocess.Popen, str, str]:
    port, key = free_port(), "sk-litellm-bench"
    models = "".join(f"""  - model_name: {name}
    litellm_params:
      model: openai/bench
      api_base: {up}/{path}/v1
      api_key: sk-bench-upstream
      input_cost_per_token: 0.000001
      output_cost_per_token: 0.000002
""" for name, path in (("bench", "plain"), ("bench-stream", "stream")))
    cfg = tmp / "litellm.yaml"
    cfg.write_text(f"model_list:\n{models}general_settings:\n  master_key: {key}\n"
                   "litellm_settings:\n  telemetry: false\n")
    # The cost map from the package, not fetched from GitHub at start (no internet here).
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("DATABASE_URL", None)
    # uvicorn restarts a worker that does not answer its health check in 5 s, and importing
    # LiteLLM takes longer than that on a busy machine: without the longer wait it never starts.
    p = procs.start([str(LITELLM), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port),
                     "--num_workers", str(workers), "--timeout_worker_healthcheck", "120"], env=env, cwd=tmp,
                    stdout=open(tmp / "litellm.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health/liveliness", timeout=300)
    return p, url, key


def start_gateway(procs: Procs, tmp: Path, up: str, args) -> tuple[subprocess.Popen, str, dict]:
    port = free_port()
    py = sys.executable
    env = {**os.environ, "GATEWAY_DEMO": "0", "GATEWAY_INSTANCE_PATH": str(tmp / "instance"),
           "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1", "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{port}",
           "PYTHONPATH": str(ROOT), "WEB_CONCURRENCY": str(args.workers)}
    env["DATABASE_URL"] = args.database_url or f"sqlite:///{tmp}/bench.db"
    if args.redis:
        env["REDIS_URL"] = args.redis
    else:
        env.pop("REDIS_URL", None)
    flask = [py, "-m", "flask", "--app", "app"]

    def cli(*a) -> str:
        return subprocess.run(flask + list(a), cwd=ROOT, env=env, check=True, capture_output=True,
                              text=True).stdout.strip()

    subprocess.run([py, "-m", "gateway", "bootstrap", "--base-url", env["GATEWAY_PUBLIC_URL"]],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    for name, path in (("bench", "plain"), ("bench-stream", "stream")):
        cli("providers", "add", "--name", name, "--kind", "openai", "--base-url", f"{up}/{path}/v1",
            "--api-key", "sk-bench-upstream", "--models", f"{name}=bench")
        cli("deployments", "add", name, name, "--upstream", "bench", "--input-price", "0.001",
            "--output-price", "0.002")
    keys = {"free": cli("keys", "create", "--name", "bench-free").splitlines()[-1],
            # Big enough to last the whole run: every request is admitted and settled.
            "limited": cli("keys", "create", "--name", "bench-limited", "--token-quota", "10000000000",
                           "--budget", "1000000", "--quota-period", "month").splitlines()[-1]}
    env["GATEWAY_SKIP_BOOTSTRAP"] = "1"
    p = procs.start([py, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", "-b", f"127.0.0.1:{port}",
                     "-w", str(args.workers), "app:app"], cwd=ROOT, env=env,
                    stdout=open(tmp / "gateway.log", "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/v1/models", key=keys["free"])
    return p, url, keys


CELLS = (("plain", False, 64), ("stream", True, 16), ("plain", False, 1), ("stream", True, 1))


def run_cells(name: str, url: str, key: str, proc: subprocess.Popen, d: float, warm: float) -> list[dict]:
    rows = []
    for mode, stream, c in CELLS:
        model = "bench-stream" if stream else "bench"
        target = f"{url}/v1/chat/completions"
        wrk(target, body(model, stream), key, c, warm)
        r = wrk(target, body(model, stream), key, c, d, proc.pid)
        r |= {"server": name, "mode": mode, "c": c}
        rows.append(r)
        print(f"  {name:<22} {mode:<6} c={c:<3} {r['rps']:>8.0f} req/s  p50 {num(r['p50'])} ms  "
              f"p99 {num(r['p99'])} ms  errors {r['errors']}  cpu {num(r['cpu_us'], 0)} µs/req", flush=True)
    return rows


def num(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def direct(up: str, d: float) -> dict:
    out = {}
    for mode, stream, c in CELLS:
        if c == 1:
            path = "stream" if stream else "plain"
            out[mode] = wrk(f"{up}/{path}/v1/chat/completions", body("bench", stream), "x", 1, d)
    return out


def table(rows: list[dict], base: dict, args) -> str:
    ref = {(r["mode"], r["c"]): r for r in rows if r["server"] == "litellm"}
    out = ["| server | cell | req/s | × LiteLLM | p50 ms | p90 ms | p99 ms | p99/p50 | added p50 ms | errors "
           "| CPU µs/req |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lite = ref.get((r["mode"], r["c"]))
        ratio = f"{r['rps'] / lite['rps']:.1f}×" if lite and r["server"] != "litellm" and lite["rps"] else "–"
        p50, p99 = r["p50"], r["p99"]
        added = num(p50 - base[r["mode"]]["p50"]) if r["c"] == 1 and p50 is not None else "–"
        tail = num(p99 / p50, 1) if p50 and p99 else "–"
        out.append(f"| {r['server']} | {r['mode']} c={r['c']} | {r['rps']:.0f} | {ratio} | {num(p50)} | "
                   f"{num(r['p90'])} | {num(p99)} | {tail} | {added} | {r['errors']} | {num(r['cpu_us'], 0)} |")
    return "\n".join(out)


def soak(url: str, key: str, proc: subprocess.Popen, n: int) -> None:
    workers = [p for p in tree(proc.pid) if p != proc.pid]
    wrk(f"{url}/v1/chat/completions", body("bench", False), key, 64, 5)     # warm
    start, done = rss_mb(workers), 0
    print(f"soak: {n} requests, workers' RSS at start {', '.join(f'{x:.1f}' for x in start)} MB", flush=True)
    marks = []
    while done < n:
        done += wrk(f"{url}/v1/chat/completions", body("bench", False), key, 64, 10)["requests"]
        marks.append(f"{done // 1000}k: {sum(rss_mb(workers)):.1f}")
    print("soak: workers' RSS summed (MB) along the way: " + ", ".join(marks))
    end = rss_mb(workers)
    print(f"soak: {done} requests, workers' RSS at end {', '.join(f'{x:.1f}' for x in end)} MB "
          f"({(sum(end) / sum(start) - 1) * 100:+.1f}%)")


def pg_database(admin_url: str, create: bool, url: str = "") -> str:
    """Create a fresh database (returns its URL), or drop the one at `url`."""
    import psycopg
    admin = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"gw_bench_{os.getpid()}" if create else url.rsplit("/", 1)[1]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' if create else f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return admin.rsplit("/", 1)[0] + "/" + name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="3 s per cell, for iteration")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--database-url", help="the gateway's database (default: SQLite in a temp dir)")
    ap.add_argument("--postgres", metavar="ADMIN_URL", help="make a database of its own on this server "
                    "(e.g. postgresql://postgres@127.0.0.1:5432/test), drop it at the end")
    ap.add_argument("--redis", help="REDIS_URL for the gateway's counters")
    ap.add_argument("--only", choices=("gateway", "litellm"), help="run one server only")
    ap.add_argument("--soak", type=int, help="N requests on the limited key; RSS at start and end")
    ap.add_argument("--hold", action="store_true", help="leave the servers up until Ctrl-C (for py-spy)")
    args = ap.parse_args()
    d, warm = (3, 1) if args.quick else (args.duration, 2)
    ensure_tools()
    if args.only != "gateway" and not args.soak and not LITELLM.exists():
        sys.exit(f"{LITELLM} is missing: make bench-litellm")
    tmp = Path(tempfile.mkdtemp(prefix="gw-compare-"))
    procs = Procs()
    if args.postgres:
        args.database_url = pg_database(args.postgres, create=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))     # finally: below stops everything
    try:
        _, up = start_nginx(procs, tmp)
        base = direct(up, d)
        print(f"direct to nginx, 1 at a time: plain p50 {base['plain']['p50']:.3f} ms, "
              f"stream p50 {base['stream']['p50']:.3f} ms", flush=True)
        rows: list[dict] = []
        if args.only != "gateway" and not args.soak:
            lp, lurl, lkey = start_litellm(procs, tmp, up, args.workers)
            rows += run_cells("litellm", lurl, lkey, lp, d, warm)
            procs.stop(lp)
        if args.only != "litellm":
            gp, gurl, keys = start_gateway(procs, tmp, up, args)
            if args.hold:
                print(f"gateway at {gurl}, workers {tree(gp.pid)}; keys {keys}; Ctrl-C stops", flush=True)
                signal.pause()
            if args.soak:
                soak(gurl, keys["limited"], gp, args.soak)
                return
            rows += run_cells("gateway, key no limits", gurl, keys["free"], gp, d, warm)
            rows += run_cells("gateway, quota+budget", gurl, keys["limited"], gp, d, warm)
        db = "Postgres" if args.database_url else "SQLite"
        print(f"\n{args.workers} workers each; gateway on {db}{' + Redis counters' if args.redis else ''}; "
              f"{d:g} s per cell; {os.cpu_count()} cores, load generator and nginx on the same cores\n")
        print(table(rows, base, args))
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / f"compare-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(rows, indent=2))
    finally:
        procs.stop_all()
        if args.postgres:
            pg_database(args.postgres, create=False, url=args.database_url)
        for log in tmp.glob("*.log"):       # for a look after a failed run
            shutil.copy(log, Path(tempfile.gettempdir()) / f"bench-{log.name}")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
