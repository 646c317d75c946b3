"""Fixtures that run a real `bantam serve` for the Python client tests.

One server is started per test session on a free loopback port (`start_server` starts
others, as the routing tests do):

    bantam serve --port <free> --host 127.0.0.1 --max-parallel 8 \
        --ctx-size 2048 --keep-alive 5m

The binary is $BANTAM_BIN (default: <repo>/target/release/bantam); models are found the way
the binary finds them (~/.bantam/models or $BANTAM_MODELS). A missing binary or model is a
test *failure*, never a skip: these tests exist to prove the server works.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
MODEL = "smollm2:135m"
CTX_SIZE = 2048
STARTUP_TIMEOUT_S = 60.0
SHUTDOWN_TIMEOUT_S = 20.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError as e:  # pragma: no cover - diagnostics only
        return f"<could not read server log {path}: {e}>"


class Server:
    def __init__(self, url: str, port: int, proc: subprocess.Popen, log: Path):
        self.url = url
        self.port = port
        self.proc = proc
        self.log = log

    def log_tail(self) -> str:
        return _log_tail(self.log)


def bantam_binary() -> Path:
    binary = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam"))
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"bantam binary not found or not executable at {binary} "
            "(build it with `cargo build --release` or set BANTAM_BIN)",
            pytrace=False,
        )
    return binary


def start_server(extra: list[str], env_extra: dict[str, str] | None = None,
                 health_path: str = "/") -> Server:
    """`bantam serve` on a free loopback port with `extra` arguments; returns once it
    answers. Stop it with `stop_server`."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_dir = Path(tempfile.mkdtemp(prefix="bantam-pytest-"))
    log = log_dir / "server.log"
    cmd = [str(bantam_binary()), "serve", "--port", str(port), "--host", "127.0.0.1", *extra]
    env = dict(os.environ)
    # The tests pick their own settings; keep a caller's environment from overriding them.
    for var in ("BANTAM_HOST", "BANTAM_API_KEY", "BANTAM_NUM_PARALLEL",
                "BANTAM_CONTEXT_LENGTH", "BANTAM_KEEP_ALIVE", "BANTAM_MAX_QUEUE",
                "BANTAM_MAX_LOADED_MODELS", "BANTAM_ROUTES", "BANTAM_LEDGER"):
        env.pop(var, None)
    env.update(env_extra or {})
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO)
    srv = Server(url, port, proc, log)
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_err: object = None
    while True:
        if proc.poll() is not None:
            pytest.fail(f"bantam serve exited early with status {proc.returncode}:\n"
                        f"{srv.log_tail()}", pytrace=False)
        try:
            r = httpx.get(url + health_path, timeout=2.0)
            if r.status_code == 200:
                return srv
            last_err = f"GET {health_path} -> {r.status_code}"
        except httpx.HTTPError as e:
            last_err = e
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"bantam serve did not answer GET {health_path} with 200 within "
                        f"{STARTUP_TIMEOUT_S:.0f}s (last: {last_err}):\n{srv.log_tail()}",
                        pytrace=False)
        time.sleep(0.1)


def stop_server(srv: Server) -> None:
    """SIGTERM, and a clean exit within the timeout (a server killed already is left)."""
    proc = srv.proc
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        rc = proc.wait(timeout=SHUTDOWN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"bantam serve did not exit within {SHUTDOWN_TIMEOUT_S:.0f}s "
                    f"of SIGTERM:\n{srv.log_tail()}", pytrace=False)
    assert rc == 0, f"bantam serve exited with status {rc} after SIGTERM:\n{srv.log_tail()}"


@pytest.fixture(scope="session")
def server() -> Server:
    srv = start_server(["--max-parallel", "8", "--ctx-size", str(CTX_SIZE), "--keep-alive", "5m"])
    try:
        tags = httpx.get(srv.url + "/api/tags", timeout=10.0)
        names = [m.get("name") or m.get("model") for m in tags.json().get("models", [])]
        if MODEL not in names:
            pytest.fail(f"model {MODEL} is not installed (server lists {names}); "
                        "run `bantam pull smollm2:135m` (scripts/test.sh does)", pytrace=False)
        yield srv
    finally:
        stop_server(srv)


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    return server.url


@pytest.fixture(scope="session")
def oai(base_url: str) -> openai.OpenAI:
    # No retries: a retried request would hide errors and double the work.
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0,
                         timeout=120.0)


@pytest.fixture(scope="session")
def oll(base_url: str) -> ollama.Client:
    return ollama.Client(host=base_url, timeout=120.0)


@pytest.fixture(scope="session")
def http(base_url: str):
    with httpx.Client(base_url=base_url, timeout=120.0) as c:
        yield c


_METRIC_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {'name{labels}': value} (labels exactly as printed)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_LINE.match(line.strip())
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


@pytest.fixture(scope="session")
def metrics(http: httpx.Client):
    """Call to fetch /metrics as a dict of series -> value."""

    def fetch() -> dict[str, float]:
        r = http.get("/metrics")
        assert r.status_code == 200, r.text
        return parse_metrics(r.text)

    return fetch


@pytest.fixture(scope="session")
def tokenize(http: httpx.Client):
    """Call with text to get the model's token ids via POST /tokenize."""

    def tok(text: str, model: str = MODEL) -> list[int]:
        r = http.post("/tokenize", json={"model": model, "content": text})
        assert r.status_code == 200, r.text
        return r.json()["tokens"]

    return tok
