#!/usr/bin/env python3
"""Load test for an OpenAI-compatible server (bantam serve, llama-server, ...).

For each concurrency level N, N clients at once each stream one /v1/completions request of
--tokens tokens (temperature 0, a different prompt each), --rounds times. Prints one JSON
object per level: aggregate generated tokens per second over the wall time, the mean
single-stream rate, and time to first token and inter-token latency percentiles (ms).

    python3 scripts/loadtest.py --url http://127.0.0.1:11434 --model qwen2.5-coder:0.5b --streams 1,4,8,16

--model takes several comma-separated names: stream i asks for the (i mod n)-th (several
LoRA adapters over one base, say).

Standard library only, so it runs wherever Python does.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

TOPICS = ["a lighthouse keeper", "a robot learning to paint", "the first city on Mars", "a dragon who hates gold",
          "a detective in Venice", "an old oak tree", "a time-travelling cat", "the last library on Earth",
          "a submarine crew", "a village of inventors", "a lost violin", "a mountain rescue dog",
          "a chess prodigy", "a haunted train station", "a desert caravan", "a clockmaker's apprentice"]


def one_stream(url, model, prompt, tokens, api_key, out):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=600)
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0,
                       "stream": True, "stream_options": {"include_usage": True}})
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, headers)
    resp = conn.getresponse()
    if resp.status != 200:
        out.update(error=f"HTTP {resp.status}: {resp.read()[:200]!r}")
        return
    stamps, n_tokens = [], None
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        chunk = json.loads(data)
        if chunk.get("usage"):
            n_tokens = chunk["usage"]["completion_tokens"]
        for c in chunk.get("choices", []):
            if c.get("text"):
                stamps.append(time.perf_counter())
    t1 = time.perf_counter()
    conn.close()
    out.update(start=t0, end=t1, stamps=stamps, tokens=n_tokens if n_tokens is not None else len(stamps))


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def level(args, n):
    results = []
    wall_total, tokens_total = 0.0, 0
    for r in range(args.rounds):
        outs = [dict() for _ in range(n)]
        models = args.model.split(",")
        threads = [threading.Thread(target=one_stream, args=(args.url, models[i % len(models)],
                   f"Once upon a time there was {TOPICS[(i + r) % len(TOPICS)]}. Here is the story:",
                   args.tokens, args.api_key, outs[i])) for i in range(n)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        errors = [o["error"] for o in outs if "error" in o]
        if errors:
            raise SystemExit(f"{n} streams: {errors[0]}")
        wall_total += wall
        tokens_total += sum(o["tokens"] for o in outs)
        results.extend(outs)
    ttft = [(o["stamps"][0] - o["start"]) * 1e3 for o in results if o["stamps"]]
    itl = [(b - a) * 1e3 for o in results for a, b in zip(o["stamps"], o["stamps"][1:])]
    per_stream = [o["tokens"] / (o["end"] - o["start"]) for o in results]
    return {
        "model": args.model, "streams": n, "tokens_per_stream": args.tokens, "rounds": args.rounds,
        "aggregate_tps": round(tokens_total / wall_total, 2),
        "per_stream_tps": round(statistics.mean(per_stream), 2),
        "ttft_ms_p50": round(pct(ttft, 50), 1), "ttft_ms_p99": round(pct(ttft, 99), 1),
        "itl_ms_p50": round(pct(itl, 50), 1), "itl_ms_p99": round(pct(itl, 99), 1),
        "wall_s": round(wall_total / args.rounds, 3),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:11434")
    ap.add_argument("--model", default="qwen2.5-coder:0.5b")
    ap.add_argument("--streams", default="1,4,8,16", help="comma-separated concurrency levels")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--api-key", default=None)
    args = ap.parse_args()
    # Warm up: load the models and touch their pages.
    for m in args.model.split(","):
        one_stream(args.url, m, "Hello", 4, args.api_key, {})
    for n in [int(s) for s in args.streams.split(",")]:
        print(json.dumps(level(args, n)), flush=True)


if __name__ == "__main__":
    main()
