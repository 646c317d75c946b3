#!/usr/bin/env python3
"""Cost of constrained decoding, measured against a running `bantam serve`.

Alternates unconstrained and JSON-schema-constrained requests (same prompt, greedy, fixed
token budget) and reports the median generation rate (eval_count / eval_duration) of each,
then runs batches of concurrent streams with and without constrained neighbours to show
whether mask computation slows the other sequences of a batch. Prints one JSON object.

    bantam serve --port 11500 &
    python3 scripts/bench_structured.py --url http://127.0.0.1:11500 --model qwen2.5-coder:0.5b
"""

import argparse
import json
import statistics
import threading
import time
import urllib.request

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "email": {"type": "string", "maxLength": 40},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 15}, "maxItems": 4},
        "address": {"type": "object", "properties": {"street": {"type": "string", "maxLength": 40}, "city": {"type": "string", "maxLength": 20}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["street", "city", "zip"], "additionalProperties": False},
        "bio": {"type": "string", "maxLength": 200},
    },
    "required": ["name", "age", "email", "tags", "address", "bio"],
    "additionalProperties": False,
}
PROMPT = "Invent a detailed customer profile for an online shop, as JSON with name, age, email, tags, address and a long bio."


def generate(url, model, fmt, n):
    body = {"model": model, "prompt": PROMPT, "stream": False, "options": {"temperature": 0, "num_predict": n}}
    if fmt is not None:
        body["format"] = fmt
    req = urllib.request.Request(url + "/api/generate", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        out = json.load(r)
    return out["eval_count"], out["eval_duration"] / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default="qwen2.5-coder:0.5b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--streams", type=int, default=4)
    a = ap.parse_args()
    generate(a.url, a.model, None, 8)  # load the model
    rates = {"unconstrained": [], "json_schema": []}
    counts = {"unconstrained": [], "json_schema": []}
    for _ in range(a.rounds):
        for kind, fmt in (("unconstrained", None), ("json_schema", SCHEMA)):
            n, secs = generate(a.url, a.model, fmt, a.tokens)
            rates[kind].append(n / secs)
            counts[kind].append(n)
    # Batches of 2 x `streams`: the first half unconstrained, the second half unconstrained
    # too or constrained; the first half's rate shows whether masks slow their neighbours.
    batch = {}
    for label, other in (("plain_beside_plain", None), ("plain_beside_constrained", SCHEMA)):
        results = []
        def run(fmt, measured):
            n, secs = generate(a.url, a.model, fmt, a.tokens)
            results.append((measured, n, secs))
        threads = [threading.Thread(target=run, args=(None, True)) for _ in range(a.streams)]
        threads += [threading.Thread(target=run, args=(other, False)) for _ in range(a.streams)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.time() - t0
        plain = [n / s for p, n, s in results if p]
        batch[label] = {"streams": len(threads), "first_half_tokens_per_s_median": round(statistics.median(plain), 2), "aggregate_tokens_per_s": round(sum(n for _, n, _ in results) / wall, 2)}
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({
        "model": a.model, "rounds": a.rounds, "num_predict": a.tokens,
        "eval_tokens_per_s_median": {k: round(v, 2) for k, v in med.items()},
        "tokens_generated_median": {k: statistics.median(v) for k, v in counts.items()},
        "constrained_over_unconstrained": round(med["json_schema"] / med["unconstrained"], 3),
        "batch": batch,
    }, indent=1))


if __name__ == "__main__":
    main()
