#!/usr/bin/env python3
"""llama.cpp's side of scripts/bench_structured.py, through llama-cpp-python (outside CI:
`python3 -m venv /tmp/lcpp-venv && /tmp/lcpp-venv/bin/pip install llama-cpp-python`).

The same prompt (through the model's chat template), greedy, up to 128 tokens, without a
format and with the same JSON schema (llama.cpp compiles it to a GBNF grammar); rate =
generated tokens / generation time from llama.cpp's own counters, median of R alternating
runs. Prints one JSON object.

Usage: bench_structured_llamacpp.py MODEL.gguf [-t 2] [-r 5] [-n 128]
"""
import argparse, json, statistics

import llama_cpp

from bench_structured import PROMPT, SCHEMA


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=5)
    ap.add_argument("-n", type=int, default=128)
    a = ap.parse_args()
    llm = llama_cpp.Llama(a.model, n_ctx=2048, n_threads=a.t, n_threads_batch=a.t, verbose=False)
    rates = {"unconstrained": [], "json_schema": []}
    for _ in range(a.r):
        for kind, fmt in (("unconstrained", None), ("json_schema", {"type": "json_object", "schema": SCHEMA})):
            llm.reset()
            llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
            llm.create_chat_completion(messages=[{"role": "user", "content": PROMPT}], response_format=fmt, max_tokens=a.n, temperature=0)
            perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
            rates[kind].append(perf.n_eval / (perf.t_eval_ms / 1000))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(json.dumps({"engine": "llama.cpp (llama-cpp-python " + llama_cpp.__version__ + ")", "threads": a.t, "rounds": a.r,
                      "eval_tokens_per_s_median": {k: round(v, 2) for k, v in med.items()},
                      "constrained_over_unconstrained": round(med["json_schema"] / med["unconstrained"], 3)}, indent=1))


if __name__ == "__main__":
    main()
