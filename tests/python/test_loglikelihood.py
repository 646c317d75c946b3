"""Prompt log-likelihoods through `/v1/completions` with `echo` and `logprobs`, as
lm-evaluation-harness's `local-completions` model asks for them (its request shape and its
parsing, `lm_eval/models/openai_completions.py`, reproduced here), and through the official
`openai` client."""

from __future__ import annotations

import math

import httpx

from conftest import MODEL


def harness_payload(prompts, seed=1234):
    # What `LocalCompletionsAPI._create_payload` sends for loglikelihood requests.
    return {"model": MODEL, "prompt": prompts, "temperature": 0, "max_tokens": 1, "logprobs": 1, "seed": seed, "echo": True}


def harness_parse(out: dict, ctxlens: list[int]) -> list[tuple[float, bool]]:
    # `LocalCompletionsAPI.parse_logprobs`, verbatim in substance.
    res = []
    for choice, ctxlen in zip(sorted(out["choices"], key=lambda c: c["index"]), ctxlens):
        assert ctxlen > 0
        logprobs = sum(choice["logprobs"]["token_logprobs"][ctxlen:-1])
        tokens_logprobs = choice["logprobs"]["token_logprobs"][ctxlen:-1]
        top_logprobs = choice["logprobs"]["top_logprobs"][ctxlen:-1]
        is_greedy = True
        for tok, top in zip(tokens_logprobs, top_logprobs):
            if tok != max(top.values()):
                is_greedy = False
                break
        res.append((logprobs, is_greedy))
    return res


def tokenize(http: httpx.Client, text: str) -> list[int]:
    r = http.post("/tokenize", json={"model": MODEL, "content": text, "add_special": False})
    assert r.status_code == 200, r.text
    return r.json()["tokens"]


def test_harness_loglikelihood_of_continuations(http):
    context = tokenize(http, "The capital of France is")
    good, bad = tokenize(http, " Paris"), tokenize(http, " a banana")
    r = http.post("/v1/completions", json=harness_payload([context + good, context + bad]))
    assert r.status_code == 200, r.text
    out = r.json()
    for c, prompt in zip(sorted(out["choices"], key=lambda c: c["index"]), [context + good, context + bad]):
        lp = c["logprobs"]
        # The prompt's tokens and the one generated, the first with nulls.
        assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(prompt) + 1
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert all(v is not None and v <= 0 for v in lp["token_logprobs"][1:])
        assert lp["text_offset"][0] == 0 and lp["text_offset"] == sorted(lp["text_offset"])
    (ll_good, greedy_good), (ll_bad, greedy_bad) = harness_parse(out, [len(context)] * 2)
    assert ll_good > ll_bad, (ll_good, ll_bad)
    # " Paris" is smollm2's greedy continuation (the reference continuation); " a banana" is not.
    assert greedy_good and not greedy_bad


def test_scored_prompt_tokens_match_the_generated_tokens_logprobs(oai):
    # Generate greedily with logprobs, then score prompt + answer: the same numbers, for as
    # many generated tokens as tokenize back to themselves.
    prompt = "The capital of France is"
    gen = oai.completions.create(model=MODEL, prompt=prompt, max_tokens=4, temperature=0, logprobs=1)
    tokens, got = gen.choices[0].logprobs.tokens, gen.choices[0].logprobs.token_logprobs
    compared = 0
    for k in range(len(tokens), 0, -1):
        text = prompt + "".join(tokens[:k])
        scored = oai.completions.create(model=MODEL, prompt=text, max_tokens=0, echo=True, logprobs=1, temperature=0)
        c = scored.choices[0]
        assert c.text == text and c.finish_reason == "length" and scored.usage.completion_tokens == 0
        if c.logprobs.tokens[-k:] != tokens[:k]:
            continue
        for i, (a, b) in enumerate(zip(got[:k], c.logprobs.token_logprobs[-k:])):
            # The first answer token's log-probability comes from the prompt's last position on
            # both sides. The later ones come from positions the generation computed as
            # generated tokens and the scoring as prompt tokens: at x86's AVX2 level those take
            # different paths through the weights (integer kernels against the f32 dense path,
            # docs/BENCHMARKS.md "Dense prompts"), which moves a log-probability by a few
            # hundredths (0.026 measured on smollm2).
            tol = 2e-3 if i == 0 else 0.1
            assert math.isclose(a, b, abs_tol=tol), (i, got, c.logprobs.token_logprobs)
        compared = k
        break
    assert compared >= 1
