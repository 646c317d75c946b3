"""Routes through the real clients: a router (`bantam serve --routes --ledger`) in front
of a pool of three bantam replicas on loopback, all on smollm2:135m.

- the openai and ollama clients ask for routes by name, streaming or not, and every
  answer says how it was served (the `x-bantam-route` header and the `bantam` field);
- a replica killed with -9 under load costs no client request;
- the ledger's totals equal the usage the clients were told, and the ledger survives
  kill -9 of the router (SQLite's integrity check, every finished request present).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from conftest import MODEL, bantam_binary, start_server, stop_server

REPLICA_ARGS = ["--max-parallel", "4", "--ctx-size", "512", "--threads", "1", "-m", MODEL]
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def replicas():
    servers = [start_server(REPLICA_ARGS) for _ in range(3)]
    try:
        yield servers
    finally:
        for s in servers:
            stop_server(s)


def routes_file(replicas, tmp: Path) -> Path:
    urls = ", ".join(f'"{r.url}/v1"' for r in replicas)
    text = f"""
local_cost_per_hour = 0.36

[upstreams.pool]
replicas = [{urls}]
model = "{MODEL}"
price_input = 0.5
price_output = 1.5
timeout = 30
retries = 3
backoff_ms = 20
health_interval = 0.5

[routes.assistant]
policy = "cascade"
local = "{MODEL}"
upstream = "pool"
escalate = {{ min_mean_logprob = -0.9 }}

[routes.big]
policy = "upstream"
local = "{MODEL}"
upstream = "pool"

[routes.small]
policy = "local"
local = "{MODEL}"

[routes.always]
policy = "cascade"
local = "{MODEL}"
upstream = "pool"
escalate = {{ max_entropy = -1.0 }}
"""
    p = tmp / "routes.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def router(replicas):
    tmp = Path(tempfile.mkdtemp(prefix="bantam-routing-"))
    ledger = tmp / "ledger.db"
    srv = start_server(["--routes", str(routes_file(replicas, tmp)), "--ledger", str(ledger),
                        "--max-parallel", "8", "--ctx-size", "1024", "-m", MODEL])
    srv.ledger = ledger
    try:
        yield srv
    finally:
        stop_server(srv)


def test_routes_answer_through_both_clients_and_say_how(router):
    oai = openai.OpenAI(base_url=f"{router.url}/v1", api_key="unused", max_retries=0, timeout=120)
    for route, how in [("big", "upstream"), ("small", "local"), ("always", "upstream")]:
        raw = oai.chat.completions.with_raw_response.create(model=route, messages=QUESTION, max_tokens=8, temperature=0)
        assert raw.headers["x-bantam-route"] == how
        c = raw.parse()
        assert c.choices[0].message.content
        assert c.model == route
        assert c.model_extra["bantam"]["served"] == how
        assert c.model_extra["bantam"]["route"] == route
        assert c.usage.completion_tokens > 0

        stream = oai.chat.completions.create(model=route, messages=QUESTION, max_tokens=8, temperature=0,
                                             stream=True, stream_options={"include_usage": True})
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        assert text
        tagged = [ch.model_extra["bantam"] for ch in chunks if (ch.model_extra or {}).get("bantam")]
        assert len(tagged) == 1 and tagged[0]["served"] == how, tagged
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

        comp = oai.completions.create(model=route, prompt="The capital of France is", max_tokens=4, temperature=0)
        assert comp.choices[0].text and comp.model_extra["bantam"]["served"] == how

    oll = ollama.Client(host=router.url, timeout=120)
    r = oll.chat(model="always", messages=QUESTION, options={"temperature": 0, "num_predict": 8})
    assert r.message.content and r.done
    parts = list(oll.chat(model="big", messages=QUESTION, options={"num_predict": 8}, stream=True))
    assert parts[-1].done and "".join(p.message.content for p in parts)
    g = oll.generate(model="small", prompt="Say hi", options={"num_predict": 4})
    assert g.response
    # The Ollama client drops fields it does not know: the header and the raw body say it.
    h = httpx.post(f"{router.url}/api/chat", json={"model": "always", "messages": QUESTION, "stream": False,
                                                    "options": {"num_predict": 4}}, timeout=120)
    assert h.headers["x-bantam-route"] == "upstream"
    assert h.json()["bantam"]["escalated"] is True
    assert h.json()["bantam"]["reason"].startswith("entropy")
    # Routes are models to the clients.
    assert "assistant" in [m.id for m in oai.models.list().data]
    # An unknown route or model is a 404 in each API's shape.
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="no-such-route", messages=QUESTION, max_tokens=2)
    with pytest.raises(ollama.ResponseError) as e:
        oll.chat(model="no-such-route", messages=QUESTION)
    assert e.value.status_code == 404


def ask(url: str, i: int) -> tuple[str, str, int, int]:
    """One request on the `big` route (streaming every other one): (header, served, prompt
    tokens, completion tokens)."""
    oai = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
    msgs = [{"role": "user", "content": f"Write a short sentence about the number {i}."}]
    if i % 2:
        with oai.chat.completions.with_streaming_response.create(
                model="big", messages=msgs, max_tokens=24, stream=True,
                stream_options={"include_usage": True}) as raw:
            header = raw.headers["x-bantam-route"]
            chunks = list(raw.parse())
        served = next(ch.model_extra["bantam"]["served"] for ch in chunks if (ch.model_extra or {}).get("bantam"))
        u = chunks[-1].usage
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    else:
        raw = oai.chat.completions.with_raw_response.create(model="big", messages=msgs, max_tokens=24)
        header = raw.headers["x-bantam-route"]
        c = raw.parse()
        served, u = c.model_extra["bantam"]["served"], c.usage
        assert c.choices[0].message.content
    return header, served, u.prompt_tokens, u.completion_tokens


def test_a_replica_killed_under_load_costs_no_request(router, replicas):
    victim = replicas[0]
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(ask, router.url, i) for i in range(24)]
        time.sleep(1.0)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        results = [f.result() for f in futures]  # any failed request raises here
    for header, served, _, completion in results:
        assert completion > 0
        # A stream the dead replica broke off was finished locally: its header had said
        # upstream, its last chunk says fallback.
        assert (header, served) in {("upstream", "upstream"), ("fallback", "fallback"), ("upstream", "fallback")}, (header, served)
    assert sum(1 for _, s, _, _ in results if s == "upstream") >= 12, results
    # The dead replica is marked down; the others keep answering.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        m = httpx.get(f"{router.url}/metrics", timeout=10).text
        if f'bantam_upstream_replica_up{{upstream="pool",url="{victim.url}/v1"}} 0' in m:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the killed replica is still marked up:\n{m}")
    for i in range(4):
        assert ask(router.url, 100 + 2 * i)[1] == "upstream"


def test_the_ledger_balances_and_survives_kill_9(replicas):
    alive = [r for r in replicas if r.proc.poll() is None]
    tmp = Path(tempfile.mkdtemp(prefix="bantam-ledger-"))
    ledger = tmp / "ledger.db"
    srv = start_server(["--routes", str(routes_file(alive, tmp)), "--ledger", str(ledger),
                        "--max-parallel", "8", "--ctx-size", "1024", "-m", MODEL])
    try:
        told = [0, 0]
        with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
            for _, _, p, c in pool.map(lambda i: ask(srv.url, i), range(12)):
                told[0] += p
                told[1] += c
        oai = openai.OpenAI(base_url=f"{srv.url}/v1", api_key="unused", max_retries=0, timeout=120)
        for route in ["assistant", "small", "always"]:
            u = oai.chat.completions.create(model=route, messages=QUESTION, max_tokens=8).usage
            told[0] += u.prompt_tokens
            told[1] += u.completion_tokens
        # A client that hangs up mid-stream is a cancelled row, not a lost one.
        with httpx.stream("POST", f"{srv.url}/v1/chat/completions", timeout=120,
                          json={"model": "big", "messages": QUESTION, "max_tokens": 64, "stream": True}) as r:
            next(r.iter_lines())
        time.sleep(1.0)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
    finally:
        if srv.proc.poll() is None:
            srv.proc.kill()

    db = sqlite3.connect(ledger)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    rows = db.execute("SELECT status, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM requests GROUP BY status").fetchall()
    by = {s: (n, p, c) for s, n, p, c in rows}
    assert by["ok"] == (15, told[0], told[1]), (by, told)
    assert by["cancelled"][0] == 1, by
    assert db.execute("SELECT COUNT(*) FROM requests WHERE key IS NOT NULL").fetchone()[0] == 0
    db.close()

    out = subprocess.run([str(bantam_binary()), "ledger", "--ledger", str(ledger), "--by", "route", "--json"],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["total"]["requests"] == 16
    assert report["total"]["prompt_tokens"] == told[0]
    groups = {g["group"]: g for g in report["groups"]}
    assert groups["big"]["requests"] == 13 and groups["always"]["escalated"] == 1
    assert report["total"]["upstream_cost"] > 0
    csv = subprocess.run([str(bantam_binary()), "ledger", "--ledger", str(ledger), "--csv", "-"],
                         capture_output=True, text=True, check=True).stdout
    assert len(csv.strip().splitlines()) == 17 and csv.startswith("id,at,day,key,route")
    table = subprocess.run([str(bantam_binary()), "ledger", "--ledger", str(ledger), "--by", "served"],
                           capture_output=True, text=True, check=True).stdout
    assert "upstream" in table and "total" in table
    bad = subprocess.run([str(bantam_binary()), "ledger", "--ledger", str(tmp / "missing.db")], capture_output=True, text=True)
    assert bad.returncode != 0 and "no ledger" in bad.stderr


SENTIMENT = [
    ("I loved this film, it was wonderful.", "positive"), ("What a great and happy day!", "positive"),
    ("The food was delicious and the staff were kind.", "positive"), ("Absolutely fantastic service.", "positive"),
    ("This book is brilliant.", "positive"), ("A lovely, warm little hotel.", "positive"),
    ("I hated this film, it was awful.", "negative"), ("What a terrible and sad day.", "negative"),
    ("The food was cold and the staff were rude.", "negative"), ("Absolutely horrible service.", "negative"),
    ("This book is boring and bad.", "negative"), ("A grim, dirty little hotel.", "negative"),
]


def test_calibrate_writes_a_threshold_that_the_server_reads(replicas, tmp_path):
    up = next(r for r in replicas if r.proc.poll() is None)
    routes = tmp_path / "routes.toml"
    routes.write_text(f"""
[upstreams.big]
url = "{up.url}/v1"
model = "{MODEL}"
price_input = 1.0
price_output = 2.0

[routes.casc]
policy = "cascade"
local = "{MODEL}"
upstream = "big"
escalate = {{ patterns = ["(?i)refund"] }}
""")
    (tmp_path / "sentiment.jsonl").write_text("".join(json.dumps({"id": f"s{i}", "input": t, "label": l}) + "\n" for i, (t, l) in enumerate(SENTIMENT)))
    (tmp_path / "task.toml").write_text('kind = "classify"\ndata = "sentiment.jsonl"\nlabels = ["positive", "negative"]\n')
    items, report = tmp_path / "answers.jsonl", tmp_path / "report.json"
    run = subprocess.run([str(bantam_binary()), "route", "calibrate", "--task", str(tmp_path / "task.toml"), "--routes", str(routes),
                          "--route", "casc", "--target-escalation", "50%", "--items", str(items), "--json", str(report),
                          "--html", str(tmp_path / "curve.html"), "--", "--parallel", "4", "-t", "2"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(l) for l in items.read_text().splitlines()]
    local = [r for r in rows if "signals" in r]
    assert len(local) == len(SENTIMENT) and len([r for r in rows if r["model"] == "big"]) == len(SENTIMENT)
    assert all(set(r["signals"]) >= {"mean_logprob", "min_logprob", "mean_entropy", "min_margin"} for r in local)
    rep = json.loads(report.read_text())
    assert rep["held_out"]["items"] + rep["calibration"]["items"] == len(SENTIMENT)
    assert abs(rep["calibration"]["escalated"] - 0.5) < 0.2, rep["calibration"]
    assert rep["signal"] in ("mean-logprob", "min-logprob", "entropy", "margin")
    assert rep["apgr_calibration"]["agreement"] is None, "no samples were drawn, so agreement has no APGR"
    text = routes.read_text()
    assert "[routes.casc.escalate]" in text and rep["threshold"] in text and '"(?i)refund"' in text, text
    assert "<svg" in (tmp_path / "curve.html").read_text()

    # The server takes the written file, and the route answers with it.
    srv = start_server(["--routes", str(routes), "--max-parallel", "4", "--ctx-size", "1024", "-m", MODEL])
    try:
        r = httpx.post(f"{srv.url}/v1/chat/completions", timeout=120,
                       json={"model": "casc", "messages": QUESTION, "max_tokens": 4})
        assert r.status_code == 200 and r.headers["x-bantam-route"] in ("local", "upstream"), r.text
    finally:
        stop_server(srv)

    # The answers are kept: another target reuses them without running the models.
    before = routes.read_text()
    again = subprocess.run([str(bantam_binary()), "route", "calibrate", "--task", str(tmp_path / "task.toml"), "--routes", str(routes),
                            "--route", "casc", "--target-escalation", "0%", "--items", str(items), "--dry-run",
                            "--json", str(report)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "reading the answers" in again.stderr and routes.read_text() == before
    assert json.loads(report.read_text())["calibration"]["escalated"] == 0.0
    bad = subprocess.run([str(bantam_binary()), "route", "calibrate", "--task", str(tmp_path / "task.toml"), "--routes", str(routes),
                          "--route", "nope", "--target-escalation", "10%"], capture_output=True, text=True)
    assert bad.returncode != 0 and "no route" in bad.stderr

    # Self-consistency: answers without samples cannot calibrate it; with them, each local
    # row records the share of the route's samples that agree, and min_agreement is written.
    missing = subprocess.run([str(bantam_binary()), "route", "calibrate", "--task", str(tmp_path / "task.toml"), "--routes", str(routes),
                              "--route", "casc", "--target-escalation", "20%", "--items", str(items), "--signal", "agreement", "--dry-run"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "measured agreement" in missing.stderr, missing.stderr
    routes.write_text(routes.read_text().replace("samples = 4", "samples = 3").replace("sample_temperature = 0.7", "sample_temperature = 1.5"))
    items2 = tmp_path / "answers-sc.jsonl"
    sc = subprocess.run([str(bantam_binary()), "route", "calibrate", "--task", str(tmp_path / "task.toml"), "--routes", str(routes),
                         "--route", "casc", "--target-escalation", "30%", "--items", str(items2), "--signal", "agreement",
                         "--json", str(report), "--", "--parallel", "4", "-t", "2"], capture_output=True, text=True, timeout=600)
    assert sc.returncode == 0, sc.stderr
    local = [json.loads(l) for l in items2.read_text().splitlines() if "signals" in l]
    assert len(local) == len(SENTIMENT)
    shares = [r["signals"]["agreement"] for r in local]
    assert all(0 <= a <= 1 and abs(a * 3 - round(a * 3)) < 1e-6 for a in shares), shares
    rep = json.loads(report.read_text())
    assert rep["signal"] == "agreement" and rep["threshold"].startswith("min_agreement = "), rep["threshold"]
    text = routes.read_text()
    assert rep["threshold"] in text and "samples = 3" in text and "sample_temperature = 1.5" in text, text
