"""Structured output against a real `bantam serve`: every schema of structured_cases.py on
two real models, through the `openai` client's `response_format` and the `ollama`
client's `format`; every output must parse and validate (jsonschema). Also choices with
their probabilities, regular expressions, grammars, and 400s for bad schemas."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import ollama
import openai
import pytest

from conftest import MODEL
from structured_cases import CASES

MODELS = [MODEL, "qwen2.5-coder:0.5b"]
SYSTEM = "You are a precise assistant. Answer with JSON only."


def _check(name: str, schema: dict, text: str) -> str | None:
    """None if `text` is JSON valid against `schema`, else why not."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        return f"{name}: not JSON ({e}): {text!r}"
    try:
        jsonschema.validate(value, schema, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as e:
        return f"{name}: invalid ({e.message}): {text!r}"
    return None


@pytest.mark.parametrize("model", MODELS)
def test_every_schema_parses_and_validates_openai(oai, model):
    failures, finish = [], {}
    for name, schema, prompt in CASES:
        r = oai.chat.completions.create(
            model=model,
            messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}},
            temperature=0,
            max_tokens=400,
        )
        c = r.choices[0]
        finish[c.finish_reason] = finish.get(c.finish_reason, 0) + 1
        problem = _check(name, schema, c.message.content)
        if problem:
            failures.append(problem)
    print(f"\n{model}: {len(CASES) - len(failures)}/{len(CASES)} outputs valid; finish reasons {finish}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("model", MODELS)
def test_every_schema_parses_and_validates_ollama_sampled(oll, model):
    """The same schemas through Ollama's `format`, sampled at temperature 0.8."""
    failures = []
    for i, (name, schema, prompt) in enumerate(CASES):
        r = oll.chat(model=model, messages=[{"role": "user", "content": prompt}], format=schema, options={"temperature": 0.8, "seed": i, "num_predict": 400})
        problem = _check(name, schema, r.message.content)
        if problem:
            failures.append(problem)
    print(f"\n{model} (sampled): {len(CASES) - len(failures)}/{len(CASES)} outputs valid")
    assert not failures, "\n".join(failures)


def test_format_json_gives_an_object(oll):
    r = oll.generate(model=MODEL, prompt="List two fruits as JSON.", format="json", options={"temperature": 0, "num_predict": 200})
    assert isinstance(json.loads(r.response), dict), r.response


def test_json_object_response_format(oai):
    r = oai.chat.completions.create(model="qwen2.5-coder:0.5b", messages=[{"role": "user", "content": "A cat named Tom, 3 years old, as a JSON object with name and age."}], response_format={"type": "json_object"}, temperature=0, max_tokens=200)
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_streamed_structured_output_concatenates_to_valid_json(oai):
    name, schema, prompt = CASES[0]
    stream = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": prompt}], response_format={"type": "json_schema", "json_schema": {"name": name, "schema": schema}}, temperature=0, max_tokens=200, stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert _check(name, schema, text) is None, text


def test_choice_returns_a_label_with_its_probability(oai):
    labels = ["positive", "negative", "neutral"]
    r = oai.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Sentiment of 'What a fantastic, delightful day!'? Answer positive, negative or neutral."}],
        temperature=0, max_tokens=10, logprobs=True, top_logprobs=20,
        extra_body={"guided_choice": labels},
    )
    c = r.choices[0]
    assert c.message.content in labels
    first = c.logprobs.content[0]
    # Probabilities are over the tokens the choices allow (whole labels and their
    # prefixes), so they sum to 1 across them; nothing else is listed.
    assert first.top_logprobs[0].token == c.message.content
    assert all(any(l.startswith(t.token) for l in labels) for t in first.top_logprobs), first.top_logprobs
    total = sum(math.exp(t.logprob) for t in first.top_logprobs)
    assert 0.99 < total <= 1.0001, first.top_logprobs


def test_regex_and_grammar(oai):
    r = oai.completions.create(model=MODEL, prompt="A US phone number:", max_tokens=30, temperature=0.7, seed=3, extra_body={"guided_regex": "[0-9]{3}-[0-9]{3}-[0-9]{4}"})
    assert re.fullmatch(r"[0-9]{3}-[0-9]{3}-[0-9]{4}", r.choices[0].text), r.choices[0].text
    grammar = 'start: "The answer is " ANSWER "."\nANSWER: "yes" | "no"'
    r = oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Is water wet?"}], temperature=0, max_tokens=20, extra_body={"guided_grammar": grammar})
    assert re.fullmatch(r"The answer is (yes|no)\.", r.choices[0].message.content), r.choices[0].message.content


@pytest.mark.parametrize("schema, problem", [
    ({"type": "object", "properties": {"a": {"type": "strin"}}}, "strin"),
    ({"type": "integer", "minimum": 5, "maximum": 3}, "minimum"),
    ({"type": "object", "properties": {"a": {"type": "number", "exclusiveMinimum": "x"}}}, "exclusiveMinimum"),
    ({"type": "string", "pattern": "(?<=a)b"}, ""),
    ({"$ref": "#/$defs/missing"}, "missing"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
])
def test_bad_schemas_are_400_naming_the_problem(oai, oll, schema, problem):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}], response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}, max_tokens=5)
    assert problem in ei.value.message, ei.value.message
    with pytest.raises(ollama.ResponseError) as ei2:
        oll.generate(model=MODEL, prompt="x", format=schema)
    assert ei2.value.status_code == 400 and problem in str(ei2.value.error)


def test_conflicting_constraints_are_400(http):
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], "guided_choice": ["a"], "guided_regex": "b"})
    assert r.status_code == 400 and "only one of" in r.json()["error"]["message"]
    r = http.post("/api/generate", json={"model": MODEL, "prompt": "x", "format": 42, "stream": False})
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_cli_run_constrains_its_answer(tmp_path):
    import os
    import subprocess
    from pathlib import Path
    from conftest import REPO
    binary = str(Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam")).resolve())
    run = lambda *a: subprocess.run([binary, "run", MODEL, "--temperature", "0", *a], capture_output=True, text=True, timeout=120)
    r = run("--choice", "yes,no", "Is the sky blue?")
    assert r.returncode == 0 and r.stdout.strip() in ("yes", "no"), r
    name, schema, prompt = CASES[1]
    (tmp_path / "s.json").write_text(json.dumps(schema))
    r = run("--format", str(tmp_path / "s.json"), prompt)
    assert r.returncode == 0 and _check(name, schema, r.stdout.strip()) is None, r
    r = run("--regex", "[0-9]{3}-[0-9]{4}", "Make up a phone number")
    assert r.returncode == 0 and re.fullmatch(r"[0-9]{3}-[0-9]{4}", r.stdout.strip()), r
    (tmp_path / "bad.json").write_text(json.dumps({"type": "integer", "minimum": 5, "maximum": 3}))
    r = run("--format", str(tmp_path / "bad.json"), "x")
    assert r.returncode != 0 and "minimum" in r.stderr, r
