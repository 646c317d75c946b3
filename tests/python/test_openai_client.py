"""The OpenAI-compatible routes of `bantam serve`, driven by the official `openai` SDK."""

from __future__ import annotations

import math
import re

import httpx
import openai
import pytest

from conftest import CTX_SIZE, MODEL

CHAT = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
LONG_CHAT = [{"role": "user", "content": "Write a very long essay about the history of the Roman Empire."}]


def greedy_chat(oai: openai.OpenAI, messages=CHAT, **kw):
    kw.setdefault("max_tokens", 24)
    return oai.chat.completions.create(model=MODEL, messages=messages, temperature=0, **kw)


# --------------------------------------------------------------------------- chat


def test_chat_non_stream_fields(oai):
    r = greedy_chat(oai)
    assert r.id.startswith("chatcmpl-")
    assert r.object == "chat.completion"
    assert r.model == MODEL
    assert isinstance(r.created, int) and r.created > 0
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert c.message.role == "assistant"
    assert isinstance(c.message.content, str) and c.message.content.strip()
    assert c.finish_reason in ("stop", "length")
    u = r.usage
    assert u.prompt_tokens > 0
    assert u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    assert "Paris" in c.message.content


def test_chat_is_deterministic_at_temperature_zero(oai):
    a = greedy_chat(oai).choices[0].message.content
    b = greedy_chat(oai).choices[0].message.content
    assert a == b


def test_chat_max_tokens_gives_length(oai):
    r = greedy_chat(oai, LONG_CHAT, max_tokens=8)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 8
    assert r.choices[0].message.content


def test_chat_max_completion_tokens_honoured(oai):
    r = oai.chat.completions.create(model=MODEL, messages=LONG_CHAT, temperature=0,
                                    max_completion_tokens=5)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 5


def test_chat_stream_matches_non_stream(oai):
    expected = greedy_chat(oai, max_tokens=24).choices[0].message.content
    chunks = list(greedy_chat(oai, max_tokens=24, stream=True))
    assert chunks, "no chunks streamed"
    with_choices = [ch for ch in chunks if ch.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    for ch in chunks:
        assert ch.object == "chat.completion.chunk"
        assert ch.id.startswith("chatcmpl-")
        assert ch.id == chunks[0].id
    text = "".join(ch.choices[0].delta.content or "" for ch in with_choices)
    assert text == expected
    finishes = [ch.choices[0].finish_reason for ch in with_choices if ch.choices[0].finish_reason]
    assert len(finishes) == 1 and finishes[0] in ("stop", "length")
    assert with_choices[-1].choices[0].finish_reason == finishes[0]


def test_chat_stream_include_usage(oai):
    ref = greedy_chat(oai, max_tokens=12)
    chunks = list(greedy_chat(oai, max_tokens=12, stream=True,
                              stream_options={"include_usage": True}))
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == ref.usage.prompt_tokens
    assert last.usage.completion_tokens == ref.usage.completion_tokens
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    # Only the final chunk carries usage.
    assert all(ch.usage is None for ch in chunks[:-1])


def test_chat_n_2(oai):
    r = oai.chat.completions.create(model=MODEL, messages=CHAT, n=2, max_tokens=12,
                                    temperature=0.8, seed=7)
    assert [c.index for c in r.choices] == [0, 1]
    for c in r.choices:
        assert c.message.role == "assistant"
        assert c.message.content
        assert c.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens > 0


def test_chat_logprobs(oai):
    r = greedy_chat(oai, max_tokens=8, logprobs=True, top_logprobs=3)
    c = r.choices[0]
    content = c.logprobs.content
    assert content and len(content) == r.usage.completion_tokens
    for e in content:
        assert isinstance(e.token, str)
        assert e.logprob <= 0
        assert e.bytes == list(e.token.encode("utf-8"))
        tops = e.top_logprobs
        assert len(tops) == 3
        lps = [t.logprob for t in tops]
        assert lps == sorted(lps, reverse=True)
        assert all(lp <= 0 for lp in lps)
        # Greedy: the chosen token is the most likely one.
        assert tops[0].token == e.token
        assert math.isclose(e.logprob, tops[0].logprob, rel_tol=1e-5, abs_tol=1e-5)


def test_chat_logprobs_tokens_spell_the_content(oai):
    """logprobs.content lists the message's tokens: no end-of-turn token text beyond it."""
    r = greedy_chat(oai, max_tokens=24, logprobs=True, top_logprobs=1)
    c = r.choices[0]
    assert c.finish_reason == "stop", "pick a prompt the model finishes within 24 tokens"
    assert "".join(e.token for e in c.logprobs.content) == c.message.content


def test_chat_no_logprobs_by_default(oai):
    r = greedy_chat(oai, max_tokens=4)
    assert r.choices[0].logprobs is None


def test_chat_stop_sequence(oai):
    full = greedy_chat(oai, max_tokens=24).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, f"answer too short to pick a stop word: {full!r}"
    stop = " " + words[2]
    assert stop in full
    r = greedy_chat(oai, max_tokens=24, stop=[stop])
    assert r.choices[0].message.content == full[: full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_chat_seed_reproducible(oai):
    msgs = [{"role": "user", "content": "Write one sentence about the sea."}]

    def run(seed):
        return oai.chat.completions.create(model=MODEL, messages=msgs, temperature=0.8,
                                           seed=seed, max_tokens=16).choices[0].message.content

    a, b = run(1234), run(1234)
    assert a == b
    # Sampling really samples: different seeds do not all give the same text.
    others = {run(s) for s in (1, 2, 3, 4)}
    assert len(others | {a}) > 1


def test_chat_logit_bias_bans_token(oai, tokenize):
    r = greedy_chat(oai, max_tokens=1, logprobs=True, top_logprobs=2)
    first = r.choices[0].logprobs.content[0].token
    ids = tokenize(first)
    assert len(ids) == 1, f"first token {first!r} tokenizes to {ids}"
    banned = ids[0]
    r2 = greedy_chat(oai, max_tokens=1, logprobs=True, top_logprobs=2,
                     logit_bias={str(banned): -100})
    new_first = r2.choices[0].logprobs.content[0].token
    assert new_first != first
    # The runner-up becomes the greedy pick.
    assert new_first == r.choices[0].logprobs.content[0].top_logprobs[1].token


# --------------------------------------------------------------------- completions

PROMPT = "The capital of France is"


def test_completion_basic(oai):
    r = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.id.startswith("cmpl-")
    assert r.model == MODEL
    assert len(r.choices) == 1
    c = r.choices[0]
    assert c.index == 0
    assert isinstance(c.text, str) and c.text
    assert "Paris" in c.text
    assert c.finish_reason in ("stop", "length")
    assert r.usage.prompt_tokens > 0
    assert r.usage.completion_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_completion_echo(oai):
    plain = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    echo = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                                  echo=True)
    assert echo.choices[0].text == PROMPT + plain.choices[0].text


def test_completion_logprobs(oai):
    r = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0,
                               logprobs=2)
    c = r.choices[0]
    lp = c.logprobs
    n = len(lp.tokens)
    assert n == r.usage.completion_tokens
    assert len(lp.token_logprobs) == n
    assert len(lp.top_logprobs) == n
    assert len(lp.text_offset) == n
    assert "".join(lp.tokens) == c.text
    for i in range(n):
        assert lp.token_logprobs[i] <= 0
        top = lp.top_logprobs[i]
        assert len(top) == 2
        best = max(top, key=top.get)
        assert best == lp.tokens[i]  # greedy
        assert math.isclose(top[best], lp.token_logprobs[i], rel_tol=1e-5, abs_tol=1e-5)
    for i in range(n - 1):
        assert lp.text_offset[i + 1] - lp.text_offset[i] == len(lp.tokens[i])


def test_completion_stream(oai):
    plain = oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8, temperature=0)
    chunks = list(oai.completions.create(model=MODEL, prompt=PROMPT, max_tokens=8,
                                         temperature=0, stream=True))
    assert chunks
    text = "".join(ch.choices[0].text for ch in chunks if ch.choices)
    assert text == plain.choices[0].text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("stop", "length")


def test_completion_prompt_list(oai):
    prompts = [PROMPT, "One, two, three,"]
    singles = [oai.completions.create(model=MODEL, prompt=p, max_tokens=8, temperature=0)
               .choices[0].text for p in prompts]
    r = oai.completions.create(model=MODEL, prompt=prompts, max_tokens=8, temperature=0)
    assert len(r.choices) == 2
    by_index = sorted(r.choices, key=lambda c: c.index)
    assert [c.index for c in by_index] == [0, 1]
    assert [c.text for c in by_index] == singles


# ---------------------------------------------------------------------- embeddings


def _norm(v):
    return math.sqrt(sum(x * x for x in v))


def test_embeddings_default_base64(oai):
    r = oai.embeddings.create(model=MODEL, input=["a", "b"])
    assert r.object == "list"
    assert len(r.data) == 2
    assert [d.index for d in r.data] == [0, 1]
    v0, v1 = r.data[0].embedding, r.data[1].embedding
    assert len(v0) == len(v1) == 576
    assert math.isclose(_norm(v0), 1.0, abs_tol=1e-3)
    assert math.isclose(_norm(v1), 1.0, abs_tol=1e-3)
    assert v0 != v1
    assert r.usage.prompt_tokens > 0


def test_embeddings_float_matches_base64(oai):
    b64 = oai.embeddings.create(model=MODEL, input=["a", "b"])
    flt = oai.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
    assert len(flt.data) == 2
    for x, y in zip(b64.data, flt.data):
        assert len(y.embedding) == 576
        assert math.isclose(_norm(y.embedding), 1.0, abs_tol=1e-3)
        assert all(math.isclose(p, q, abs_tol=1e-6) for p, q in zip(x.embedding, y.embedding))


def test_embeddings_raw_base64_requested(http):
    r = http.post("/v1/embeddings", json={"model": MODEL, "input": "hello",
                                          "encoding_format": "base64"})
    assert r.status_code == 200, r.text
    emb = r.json()["data"][0]["embedding"]
    assert isinstance(emb, str)
    import base64
    assert len(base64.b64decode(emb)) == 576 * 4


# -------------------------------------------------------------------------- models


def test_models_list_and_retrieve(oai):
    ids = [m.id for m in oai.models.list()]
    assert MODEL in ids
    m = oai.models.retrieve(MODEL)
    assert m.id == MODEL
    assert m.object == "model"


def test_models_retrieve_missing(oai):
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("no-such-model")


# -------------------------------------------------------------------------- errors


def test_error_unknown_model(oai):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.chat.completions.create(model="no-such-model:1b", messages=CHAT, max_tokens=4)
    assert "not found" in ei.value.message
    assert ei.value.status_code == 404


def test_error_empty_messages(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert ei.value.status_code == 400


def test_error_temperature_out_of_range(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4, temperature=5)
    assert "temperature" in ei.value.message


def test_error_context_length_exceeded(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL, max_tokens=4,
                                    messages=[{"role": "user", "content": "hello " * 5000}])
    err = ei.value
    assert err.code == "context_length_exceeded"
    msg = err.message
    assert str(CTX_SIZE) in msg
    numbers = [int(n) for n in re.findall(r"\d+", msg)]
    assert any(n > CTX_SIZE for n in numbers), f"no token count above {CTX_SIZE} in {msg!r}"
    assert err.body is not None and err.body.get("code") == "context_length_exceeded"


def test_error_unknown_response_format(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4,
                                    response_format={"type": "xml"})
    assert "response_format" in ei.value.message


def test_error_malformed_json_body(base_url):
    r = httpx.post(f"{base_url}/v1/chat/completions", content=b'{"model": "smollm2:135m",',
                   headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"error"}
    err = body["error"]
    assert {"message", "type", "param", "code"} <= set(err)
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == "invalid_request_error"
