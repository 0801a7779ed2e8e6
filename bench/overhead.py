"""Gateway overhead: requests/s and p50/p99 latency through the gateway versus straight to
the mock upstream, at concurrency 1, 16 and 64, non-streaming and streaming.

    python bench/overhead.py [--duration 10] [--workers 2] [--worker-class gevent]

Starts the mock upstream (gevent, its own process) and the gateway (gunicorn, gevent
workers, SQLite in a temp dir, usage records written as in production), then drives both
with wrk (Debian package `wrk`). Load generator, gateway and upstream share the machine's
cores, as in PERF-NOTES. Results go to stdout as a Markdown table and to bench/results/.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# One load script, port finder and readiness wait for both benchmarks.
from compare import LUA, free_port, wait_http  # noqa: E402


def run_wrk(url: str, body: str, key: str, conns: int, duration: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % (body, key))
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s",
                          "--latency", "-s", f.name, url], capture_output=True, text=True).stdout
    os.unlink(f.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    lat = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", out, re.M))
    return {"rps": rps, "p50_ms": to_ms(lat.get("50")), "p99_ms": to_ms(lat.get("99")),
            "errors": int(errors.group(1)) if errors else 0}


def to_ms(v: str | None) -> float | None:
    if not v:
        return None
    num, unit = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(num) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[unit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--worker-class", default="gevent_pywsgi")
    ap.add_argument("--concurrency", default="1,16,64")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install wrk")

    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        up_port, gw_port = free_port(), free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "gateway.mock_upstream", "--port", str(up_port)],
                                      cwd=ROOT, stdout=subprocess.DEVNULL))
        upstream = f"http://127.0.0.1:{up_port}"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp}/bench.db", "GATEWAY_DEMO": "0",
               "GATEWAY_INSTANCE_PATH": str(tmp / "instance"),
               "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1", "GATEWAY_WORKER_CLASS": args.worker_class,
               "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{gw_port}"}
        flask = [sys.executable, "-m", "flask", "--app", "app"]
        subprocess.run(flask + ["providers", "add", "--name", "bench", "--kind", "openai", "--base-url",
                                upstream + "/v1", "--api-key", "sk-bench-upstream", "--models", "bench=echo"],
                       cwd=ROOT, env=env, check=True, capture_output=True)
        key = subprocess.run(flask + ["keys", "create", "--name", "bench"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()[-1]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf", "-b",
             f"127.0.0.1:{gw_port}", "-w", str(args.workers), "app:app"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_http(upstream + "/v1/models")
        wait_http(f"http://127.0.0.1:{gw_port}/v1/models")

        messages = [{"role": "user", "content": "Say hello to the benchmark in a few words please"}]
        rows = []
        for stream in (False, True):
            body = json.dumps({"model": "bench", "messages": messages, "stream": stream})
            direct_body = json.dumps({"model": "echo", "messages": messages, "stream": stream})
            for c in [int(x) for x in args.concurrency.split(",")]:
                run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", body, key, c, 2)   # warm-up
                direct = run_wrk(upstream + "/v1/chat/completions", direct_body, "sk-bench-upstream", c,
                                 args.duration)
                via = run_wrk(f"http://127.0.0.1:{gw_port}/v1/chat/completions", body, key, c, args.duration)
                rows.append({"stream": stream, "concurrency": c, "direct": direct, "gateway": via})
                print(f"stream={stream} c={c}: direct {direct['rps']:.0f} rps p50 {direct['p50_ms']} ms | "
                      f"gateway {via['rps']:.0f} rps p50 {via['p50_ms']} ms p99 {via['p99_ms']} ms "
                      f"errors {via['errors']}", flush=True)
        report(rows, args)
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def report(rows: list[dict], args) -> None:
    lines = ["| mode | concurrency | direct req/s | gateway req/s | kept | direct p50 ms | gateway p50 ms "
             "| added p50 ms | gateway p99 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        d, g = r["direct"], r["gateway"]
        lines.append(f"| {'stream' if r['stream'] else 'plain'} | {r['concurrency']} | {d['rps']:.0f} | "
                     f"{g['rps']:.0f} | {g['rps'] / d['rps']:.0%} | {d['p50_ms']:.2f} | {g['p50_ms']:.2f} | "
                     f"{g['p50_ms'] - d['p50_ms']:.2f} | {g['p99_ms']:.2f} |")
    table = "\n".join(lines)
    print(f"\n{args.workers} gunicorn {args.worker_class} workers, {args.duration}s per run, "
          f"{os.cpu_count()} cores\n\n{table}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"overhead-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
