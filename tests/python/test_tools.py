"""Tool calling against a real `bantam serve` with the `openai` and `ollama` clients:
tool_choice "required" and a named function always give a valid call (arguments that
match the function's schema), "none" gives text, "auto" gives calls or content (never a
500), streamed calls arrive as `tool_calls` deltas."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from conftest import MODEL

QWEN = "qwen2.5-coder:0.5b"

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}
EMAIL = {"type": "function", "function": {"name": "send_email", "description": "Send an email",
         "parameters": {"type": "object", "properties": {"to": {"type": "string", "maxLength": 60}, "subject": {"type": "string", "maxLength": 60}, "urgent": {"type": "boolean"}}, "required": ["to", "subject"]}}}
CONVERT = {"type": "function", "function": {"name": "convert_currency", "description": "Convert an amount between currencies",
           "parameters": {"type": "object", "properties": {"amount": {"type": "number", "minimum": 0, "maximum": 1000000}, "from": {"enum": ["USD", "EUR", "JPY"]}, "to": {"enum": ["USD", "EUR", "JPY"]}}, "required": ["amount", "from", "to"]}}}
TOOLS = [WEATHER, EMAIL, CONVERT]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
PROMPTS = [
    "What's the weather like in Tokyo right now?",
    "Email bob@example.com with the subject 'Lunch tomorrow'.",
    "How much is 100 US dollars in euros?",
    "Tell me a joke about cats.",
]


def _valid_calls(calls, allowed):
    assert calls, "no tool call"
    for c in calls:
        assert c.type == "function" and c.id
        assert c.function.name in allowed, c.function.name
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])


@pytest.mark.parametrize("model", [MODEL, QWEN])
def test_required_always_gives_a_valid_call(oai, model):
    for prompt in PROMPTS:
        r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", (prompt, c)
        _valid_calls(c.message.tool_calls, SCHEMAS)


@pytest.mark.parametrize("model", [MODEL, QWEN])
def test_named_function_is_the_one_called(oai, model):
    for prompt in PROMPTS:
        r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS,
                                        tool_choice={"type": "function", "function": {"name": "send_email"}}, parallel_tool_calls=False, temperature=0.7, seed=1, max_tokens=200)
        c = r.choices[0]
        assert c.finish_reason == "tool_calls"
        assert len(c.message.tool_calls) == 1
        _valid_calls(c.message.tool_calls, {"send_email"})


def test_auto_calls_the_tool_the_question_needs(oai):
    r = oai.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS, temperature=0, max_tokens=200)
    c = r.choices[0]
    assert c.finish_reason == "tool_calls"
    _valid_calls(c.message.tool_calls, {"get_weather"})
    assert json.loads(c.message.tool_calls[0].function.arguments)["city"] == "Tokyo"


def test_auto_never_fails_and_answers_are_content_or_calls(oai):
    for model in (MODEL, QWEN):
        for prompt in PROMPTS:
            r = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], tools=TOOLS, tool_choice="auto", temperature=0.9, seed=7, max_tokens=60)
            c = r.choices[0]
            if c.message.tool_calls:
                assert c.finish_reason == "tool_calls"
                _valid_calls(c.message.tool_calls, SCHEMAS)
            else:
                # Plain or malformed output comes back as content with its own finish reason.
                assert c.finish_reason in ("stop", "length") and isinstance(c.message.content, str)


def test_none_gives_text(oai):
    r = oai.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS, tool_choice="none", temperature=0, max_tokens=30)
    c = r.choices[0]
    assert c.message.tool_calls is None and c.message.content
    assert c.finish_reason in ("stop", "length")


def test_streamed_calls_arrive_as_deltas(oai):
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[2]}], tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200, stream=True)
    calls, finish = {}, None
    for ch in stream:
        for choice in ch.choices:
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"name": "", "arguments": ""})
                entry["name"] += d.function.name or ""
                entry["arguments"] += d.function.arguments or ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and calls
    for c in calls.values():
        jsonschema.validate(json.loads(c["arguments"]), SCHEMAS[c["name"]])


def test_a_tool_result_continues_the_conversation(oai):
    first = oai.chat.completions.create(model=QWEN, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS, tool_choice="required", temperature=0, max_tokens=200)
    call = first.choices[0].message.tool_calls[0]
    r = oai.chat.completions.create(model=QWEN, temperature=0, max_tokens=40, tools=TOOLS, tool_choice="none", messages=[
        {"role": "user", "content": PROMPTS[0]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": call.id, "type": "function", "function": {"name": call.function.name, "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "conditions": "sunny"})},
    ])
    assert r.choices[0].message.content and r.choices[0].message.tool_calls is None


def test_ollama_tools_give_message_tool_calls(oll):
    r = oll.chat(model=QWEN, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS, options={"temperature": 0})
    calls = r.message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    assert isinstance(calls[0].function.arguments, dict)
    jsonschema.validate(dict(calls[0].function.arguments), SCHEMAS["get_weather"])
    # Streamed, the calls come in the final chunk.
    chunks = list(oll.chat(model=QWEN, messages=[{"role": "user", "content": PROMPTS[0]}], tools=TOOLS, options={"temperature": 0}, stream=True))
    assert any(ch.message.tool_calls for ch in chunks) and chunks[-1].done


@pytest.mark.parametrize("body, param", [
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}}, "tool_choice"),
])
def test_bad_tool_requests_are_400(http, body, param):
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param


def test_plain_answers_stream_token_by_token_with_tools_on_offer(oai):
    # smollm2 answers this one in prose (greedy): it must stream as it is generated, not
    # arrive in one piece at the end.
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[3]}], tools=TOOLS, temperature=0, max_tokens=40, stream=True)
    pieces, calls = [], 0
    for ch in stream:
        for c in ch.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
            calls += len(c.delta.tool_calls or [])
    assert calls == 0 and len(pieces) > 5, pieces
