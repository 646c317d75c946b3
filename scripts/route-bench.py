#!/usr/bin/env python3
"""The router's own cost, printed as JSON lines (docs/ROUTING.md quotes them):

1. `local_overhead`: a route with policy "local" against naming its model directly, the
   two alternated request by request (one-token answers, keep-alive), medians.
2. `upstream_throughput`: requests per second the router passes to an upstream that answers
   at once (a canned OpenAI reply from a small asyncio server here), with N connections
   kept busy for D seconds; every answer must be a 200 marked `x-bantam-route: upstream`.

    python3 scripts/route-bench.py [--bin target/release/bantam] [--model smollm2:135m]
        [--requests 300] [--connections 32] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
REPLY = json.dumps({
    "id": "chatcmpl-x", "object": "chat.completion", "created": 0, "model": "canned",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


async def canned_upstream(port: int, ready: threading.Event) -> None:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await r.readuntil(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        n = int(line.split(b":")[1])
                await r.readexactly(n)
                w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(REPLY), REPLY))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            w.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    ready.set()
    async with server:
        await server.serve_forever()


def serve(binary: str, routes: Path, model: str, port: int) -> subprocess.Popen:
    p = subprocess.Popen([binary, "serve", "--port", str(port), "--routes", str(routes), "-m", model, "--max-parallel", "8",
                          "--max-queue", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    import urllib.request
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit("the server did not start")


async def post(r: asyncio.StreamReader, w: asyncio.StreamWriter, port: int, body: bytes) -> tuple[int, dict[str, str]]:
    w.write(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:%d\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (port, len(body), body))
    await w.drain()
    head = (await r.readuntil(b"\r\n\r\n")).decode()
    lines = head.split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    await r.readexactly(int(headers.get("content-length", "0")))
    return status, headers


async def local_overhead(port: int, model: str, n: int) -> dict:
    r, w = await asyncio.open_connection("127.0.0.1", port)
    times: dict[str, list[float]] = {"direct": [], "route": []}
    for i in range(n * 2 + 20):
        which = "direct" if i % 2 == 0 else "route"
        body = json.dumps({"model": model if which == "direct" else "loc", "max_tokens": 1, "temperature": 0,
                           "messages": [{"role": "user", "content": "Say yes."}]}).encode()
        t = time.perf_counter()
        status, headers = await post(r, w, port, body)
        dt = time.perf_counter() - t
        assert status == 200 and headers["x-bantam-route"] == "local", (status, headers)
        if i >= 20:  # warm-up
            times[which].append(dt * 1e3)
    w.close()
    d, rt = statistics.median(times["direct"]), statistics.median(times["route"])
    return {"bench": "local_overhead", "requests_each": n, "direct_median_ms": round(d, 3), "route_median_ms": round(rt, 3),
            "overhead_median_ms": round(rt - d, 3)}


async def throughput(port: int, connections: int, seconds: float) -> dict:
    body = json.dumps({"model": "up", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}).encode()
    done, bad = 0, 0
    stop = time.perf_counter() + seconds
    lat: list[float] = []

    async def worker() -> None:
        nonlocal done, bad
        r, w = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            t = time.perf_counter()
            status, headers = await post(r, w, port, body)
            lat.append((time.perf_counter() - t) * 1e3)
            if status == 200 and headers.get("x-bantam-route") == "upstream":
                done += 1
            else:
                bad += 1
        w.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"bench": "upstream_throughput", "connections": connections, "seconds": round(wall, 2), "requests": done, "failed": bad,
            "requests_per_s": round(done / wall, 1), "median_ms": round(lat[len(lat) // 2], 3), "p99_ms": round(lat[int(len(lat) * 0.99)], 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=str(REPO / "target" / "release" / "bantam"))
    ap.add_argument("--model", default="smollm2:135m")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    up_port, port = free_port(), free_port()
    ready = threading.Event()
    threading.Thread(target=lambda: asyncio.run(canned_upstream(up_port, ready)), daemon=True).start()
    ready.wait()
    routes = Path(tempfile.mkdtemp()) / "routes.toml"
    routes.write_text(f"""
[upstreams.canned]
url = "http://127.0.0.1:{up_port}/v1"
model = "canned"
[routes.loc]
policy = "local"
local = "{a.model}"
[routes.up]
policy = "upstream"
local = "{a.model}"
upstream = "canned"
""")
    server = serve(a.bin, routes, a.model, port)
    machine = {"cpu": cpu(), "cores": os.cpu_count()}
    try:
        for result in (asyncio.run(local_overhead(port, a.model, a.requests)), asyncio.run(throughput(port, a.connections, a.seconds))):
            print(json.dumps({**result, **machine}), flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
