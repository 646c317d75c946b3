"""The Ollama-compatible routes (and health, metrics, cancellation, concurrency) of
`bantam serve`, driven by the official `ollama` SDK plus raw HTTP where the SDK can't."""

from __future__ import annotations

import json
import math
import socket
import threading
import time

import httpx
import ollama
import pytest

from conftest import CTX_SIZE, MODEL

GREEDY = {"temperature": 0, "num_predict": 16}
MSGS = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
LONG_MSGS = [{"role": "user", "content": "Write a very long essay about the history of the Roman Empire."}]
RUNNING = f'bantam_running_sequences{{model="{MODEL}"}}'


# ---------------------------------------------------------------------------- chat


def test_chat_non_stream(oll):
    r = oll.chat(model=MODEL, messages=MSGS, options=GREEDY)
    assert r.model == MODEL
    assert r.message.role == "assistant"
    assert isinstance(r.message.content, str) and r.message.content.strip()
    assert "Paris" in r.message.content
    assert r.done is True
    assert r.done_reason in ("stop", "length")
    assert r.eval_count and r.eval_count > 0
    assert r.eval_count <= 16
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert r.total_duration and r.total_duration > 0
    # Nanoseconds: more than a microsecond, less than a minute.
    assert 1_000 < r.total_duration < 60_000_000_000
    assert r.eval_duration and r.eval_duration > 0
    assert r.total_duration >= r.eval_duration
    assert r.created_at


def test_chat_num_predict_length(oll):
    r = oll.chat(model=MODEL, messages=LONG_MSGS, options={"temperature": 0, "num_predict": 7})
    assert r.done_reason == "length"
    assert r.eval_count == 7


def test_chat_stream_matches_non_stream(oll):
    full = oll.chat(model=MODEL, messages=MSGS, options=GREEDY)
    parts = list(oll.chat(model=MODEL, messages=MSGS, options=GREEDY, stream=True))
    assert len(parts) >= 2
    assert "".join(p.message.content for p in parts) == full.message.content
    assert all(p.done is False for p in parts[:-1])
    last = parts[-1]
    assert last.done is True
    assert last.done_reason == full.done_reason
    assert last.eval_count == full.eval_count
    assert last.prompt_eval_count == full.prompt_eval_count
    assert last.total_duration and last.total_duration > 0


# ------------------------------------------------------------------------ generate


def test_generate_non_stream(oll):
    r = oll.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY)
    assert r.model == MODEL
    assert isinstance(r.response, str) and r.response.strip()
    assert r.done is True
    assert r.done_reason in ("stop", "length")
    assert r.eval_count and r.eval_count > 0
    assert r.prompt_eval_count and r.prompt_eval_count > 0
    assert r.total_duration and r.total_duration > 0
    assert isinstance(r.context, list) and r.context
    assert all(isinstance(t, int) for t in r.context)
    assert len(r.context) == r.prompt_eval_count + r.eval_count


def test_generate_context_continues(oll):
    first = oll.generate(model=MODEL, prompt="My name is Alice. Say hello to me.", options=GREEDY)
    second = oll.generate(model=MODEL, prompt="What is my name?", context=first.context,
                          options=GREEDY)
    assert second.done is True
    assert second.response.strip()
    # The earlier conversation is part of the new prompt.
    assert second.context[: len(first.context)] == first.context


def test_generate_raw(oll):
    r = oll.generate(model=MODEL, prompt="The capital of France is", raw=True,
                     options={"temperature": 0, "num_predict": 8})
    assert r.done is True
    assert "Paris" in r.response
    # No template: the prompt is just its own few tokens.
    assert r.prompt_eval_count is not None and r.prompt_eval_count <= 8


def test_generate_system(oll, tokenize):
    system = "You are a pirate."
    r = oll.generate(model=MODEL, prompt="Hi", system=system, options=GREEDY)
    assert r.response.strip()
    sys_ids = tokenize(system)
    ctx = r.context
    assert any(ctx[i:i + len(sys_ids)] == sys_ids for i in range(len(ctx))), \
        f"system prompt tokens {sys_ids} not in context {ctx}"
    plain = oll.generate(model=MODEL, prompt="Hi", options=GREEDY)
    assert not any(plain.context[i:i + len(sys_ids)] == sys_ids
                   for i in range(len(plain.context)))


def test_generate_stream(oll):
    full = oll.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY)
    parts = list(oll.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY,
                              stream=True))
    assert len(parts) >= 2
    assert "".join(p.response for p in parts) == full.response
    assert parts[-1].done is True
    assert all(p.done is False for p in parts[:-1])
    assert parts[-1].context == full.context
    assert parts[-1].eval_count == full.eval_count


# ---------------------------------------------------------------------- embeddings


def test_embed(oll):
    r = oll.embed(model=MODEL, input=["x", "y"])
    assert r.model == MODEL
    assert len(r.embeddings) == 2
    a, b = r.embeddings
    assert len(a) == len(b) == 576
    assert math.isclose(math.sqrt(sum(v * v for v in a)), 1.0, abs_tol=1e-3)
    assert a != b
    single = oll.embed(model=MODEL, input="x")
    assert len(single.embeddings) == 1
    assert all(math.isclose(p, q, abs_tol=1e-5) for p, q in zip(single.embeddings[0], a))


def test_embeddings_legacy(oll):
    r = oll.embeddings(model=MODEL, prompt="hello world")
    assert len(r.embedding) == 576
    assert all(isinstance(v, float) for v in r.embedding)
    assert any(v != 0 for v in r.embedding)


# ----------------------------------------------------------------- list/show/ps


def test_list(oll):
    models = {m.model: m for m in oll.list().models}
    assert MODEL in models
    m = models[MODEL]
    assert m.details.family == "llama"
    assert m.details.quantization_level
    assert m.details.format == "gguf"
    assert m.size and m.size > 0
    assert m.digest
    assert m.modified_at is not None


def test_show(oll):
    s = oll.show(MODEL)
    assert s.details.family == "llama"
    assert s.details.quantization_level
    assert isinstance(s.modelinfo, dict)
    assert s.modelinfo.get("general.architecture") == "llama"
    assert s.template and s.template.strip()


def test_show_missing(oll):
    with pytest.raises(ollama.ResponseError) as ei:
        oll.show("no-such-model:1b")
    assert ei.value.status_code == 404


def test_ps_after_request(oll):
    oll.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 1})
    loaded = {m.model: m for m in oll.ps().models}
    assert MODEL in loaded
    m = loaded[MODEL]
    assert m.size and m.size > 0
    assert m.expires_at is not None
    assert m.context_length == CTX_SIZE
    assert m.details.family == "llama"


def test_keep_alive_zero_unloads(oll):
    oll.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 1})
    assert MODEL in [m.model for m in oll.ps().models]
    r = oll.generate(model=MODEL, prompt="", keep_alive=0)
    assert r.done is True
    assert r.done_reason == "unload"
    deadline = time.monotonic() + 5
    while MODEL in [m.model for m in oll.ps().models]:
        assert time.monotonic() < deadline, "model still listed by ps() 5s after keep_alive=0"
        time.sleep(0.1)
    # It loads again on the next request.
    again = oll.generate(model=MODEL, prompt="Hi", options={"temperature": 0, "num_predict": 2})
    assert again.done is True
    assert MODEL in [m.model for m in oll.ps().models]


def test_empty_prompt_loads(oll):
    r = oll.generate(model=MODEL, prompt="")
    assert r.done is True
    assert r.response == ""
    assert MODEL in [m.model for m in oll.ps().models]


# -------------------------------------------------------------------------- errors


def test_error_unknown_model(oll):
    with pytest.raises(ollama.ResponseError) as ei:
        oll.chat(model="no-such-model:1b", messages=MSGS)
    assert ei.value.status_code == 404
    assert "not found" in ei.value.error


def test_error_unknown_format(http):
    # The client only sends "json" or a schema; any other value is refused by the server.
    r = http.post("/api/chat", json={"model": MODEL, "messages": MSGS, "format": "yaml", "stream": False})
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_error_negative_num_predict(oll):
    with pytest.raises(ollama.ResponseError) as ei:
        oll.chat(model=MODEL, messages=MSGS, options={"num_predict": -5})
    assert ei.value.status_code == 400
    assert "num_predict" in ei.value.error


def test_error_wrong_option_type(oll):
    with pytest.raises(ollama.ResponseError) as ei:
        oll.chat(model=MODEL, messages=MSGS, options={"temperature": "hot"})
    assert ei.value.status_code == 400


def test_error_malformed_json(base_url):
    r = httpx.post(f"{base_url}/api/chat", content=b'{"model": "smollm2:135m", "messages": [',
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert isinstance(body.get("error"), str) and body["error"]


# -------------------------------------------------------------------------- health


def test_health_routes(http):
    r = http.get("/")
    assert r.status_code == 200
    assert r.text.strip()
    h = http.head("/")
    assert h.status_code == 200
    assert h.content == b""
    r = http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = http.get("/api/version")
    assert r.status_code == 200
    v = r.json()["version"]
    assert isinstance(v, str) and v


# ------------------------------------------------------------------------- metrics


def test_metrics(oll, http, metrics):
    before = metrics()
    oll.chat(model=MODEL, messages=MSGS, options={"temperature": 0, "num_predict": 4})
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    for needle in (
        'bantam_requests_total{route="/api/chat",status="200"}',
        "bantam_generated_tokens_total",
        "bantam_prefix_cache_hit_tokens_total",
        "bantam_queue_depth",
        "bantam_running_sequences",
        "bantam_kv_cache_usage_ratio",
        "bantam_model_load_seconds",
    ):
        assert needle in text, f"{needle} missing from /metrics"
    after = metrics()
    key = 'bantam_requests_total{route="/api/chat",status="200"}'
    assert after[key] >= before.get(key, 0) + 1
    gen = f'bantam_generated_tokens_total{{model="{MODEL}"}}'
    assert after[gen] > before.get(gen, 0)
    assert 0 <= after[f'bantam_kv_cache_usage_ratio{{model="{MODEL}"}}'] <= 1
    assert after[f'bantam_model_load_seconds{{model="{MODEL}"}}'] > 0


# -------------------------------------------------------------------- cancellation


def _wait_running(metrics, want: float, within: float) -> float:
    deadline = time.monotonic() + within
    while True:
        value = metrics().get(RUNNING)
        if value == want:
            return value
        if time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def test_cancel_streaming_chat(base_url, metrics, oll):
    oll.generate(model=MODEL, prompt="")  # make sure the model is loaded
    assert _wait_running(metrics, 0, 5) == 0
    body = {"model": MODEL, "messages": LONG_MSGS, "stream": True,
            "options": {"temperature": 0, "num_predict": 2000}}
    with httpx.Client(timeout=60) as c:
        with c.stream("POST", f"{base_url}/api/chat", json=body) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            got = [json.loads(next(lines)) for _ in range(3)]
            assert all(g["done"] is False for g in got)
            assert metrics().get(RUNNING) == 1, "the stream is not running before the close"
    value = _wait_running(metrics, 0, 2.0)
    assert value == 0, f"{RUNNING} still {value} 2s after the client closed a stream"


def test_cancel_non_streaming_chat(server, metrics, oll):
    oll.generate(model=MODEL, prompt="")
    assert _wait_running(metrics, 0, 5) == 0
    body = json.dumps({"model": MODEL, "messages": LONG_MSGS, "stream": False,
                       "options": {"temperature": 0, "num_predict": 2000}}).encode()
    req = (b"POST /api/chat HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           b"Content-Type: application/json\r\n"
           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        s.sendall(req)
        time.sleep(0.3)
        running = metrics().get(RUNNING)
    finally:
        s.close()
    assert running == 1, "the request was not running 0.3s after it was sent"
    value = _wait_running(metrics, 0, 2.0)
    assert value == 0, f"{RUNNING} still {value} 2s after the client closed its socket"


# --------------------------------------------------------------------- concurrency

PROMPTS = [
    "What is the capital of France?",
    "Name three colors.",
    "Why is the sky blue?",
    "What is 2 + 2?",
    "Write a haiku about the moon.",
    "What do bees make?",
    "Describe a cat in one sentence.",
    "What is the largest ocean?",
]


def _chat_text(client: ollama.Client, prompt: str):
    return client.chat(model=MODEL, messages=[{"role": "user", "content": prompt}],
                       options={"temperature": 0, "num_predict": 24})


@pytest.fixture(scope="module")
def concurrent_run(base_url, oll):
    """Each prompt's greedy answer alone, then all eight sent at once."""
    solo = {p: _chat_text(oll, p).message.content for p in PROMPTS}

    results: dict[str, object] = {}
    barrier = threading.Barrier(len(PROMPTS))

    def worker(p):
        client = ollama.Client(host=base_url, timeout=120)
        barrier.wait()
        try:
            results[p] = _chat_text(client, p)
        except Exception as e:  # recorded and asserted by the tests
            results[p] = e

    threads = [threading.Thread(target=worker, args=(p,)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    hung = [p for p, t in zip(PROMPTS, threads) if t.is_alive()]
    return solo, results, hung


def test_concurrent_greedy_chats_succeed(concurrent_run):
    _, results, hung = concurrent_run
    assert not hung, f"concurrent requests hung: {hung}"
    errors = {p: r for p, r in results.items() if isinstance(r, Exception)}
    assert not errors, f"concurrent requests failed: {errors}"
    for p in PROMPTS:
        r = results[p]
        assert r.done is True
        assert r.done_reason in ("stop", "length")
        assert r.message.content.strip()


def test_concurrent_chosen_prompt_matches_solo(concurrent_run):
    solo, results, _ = concurrent_run
    chosen = PROMPTS[0]
    assert not isinstance(results.get(chosen), Exception), results.get(chosen)
    # Greedy decoding beside 7 other sequences gives the same tokens as alone.
    assert results[chosen].message.content == solo[chosen]


def test_concurrent_all_prompts_match_solo(concurrent_run):
    solo, results, _ = concurrent_run
    def got(p):
        r = results.get(p)
        return r if isinstance(r, Exception) else r.message.content

    mismatched = {p: {"alone": solo[p], "beside 7 others": got(p)}
                  for p in PROMPTS if got(p) != solo[p]}
    assert not mismatched, f"greedy answers differ under load: {mismatched}"
