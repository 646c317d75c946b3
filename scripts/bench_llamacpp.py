#!/usr/bin/env python3
"""llama.cpp's side of the side-by-side benchmark, through llama-cpp-python (which builds
llama.cpp from source; install it in a virtual environment outside CI:
`python3 -m venv /tmp/lcpp-venv && /tmp/lcpp-venv/bin/pip install llama-cpp-python`).

Measures what `bantam bench` measures, as llama-bench does: pp = one batch of P random
tokens from an empty cache; tg = N single-token decodes from an empty cache; a warm-up run,
then R runs; prints one JSON object per test with mean and sample stdev of tokens/s.

Usage: bench_llamacpp.py MODEL.gguf [-p 128] [-n 64] [-t 2] [-r 5]
"""
import argparse, json, random, statistics, time, resource

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=5)
    a = ap.parse_args()
    llm = llama_cpp.Llama(a.model, n_ctx=max(a.p, a.n) + 8, n_batch=max(a.p, 1), n_ubatch=max(a.p, 1),
                          n_threads=a.t, n_threads_batch=a.t, verbose=False)
    n_vocab = llm.n_vocab()
    rnd = random.Random(1)
    bos = llm.token_bos() if llm._model.add_bos_token() else None
    for test, n in (("pp", a.p), ("tg", a.n)):
        if n == 0:
            continue
        samples = []
        for r in range(a.r + 1):
            llm.reset()
            if test == "pp":
                toks = [rnd.randrange(n_vocab) for _ in range(n)]
                if bos is not None:
                    toks[0] = bos
                t0 = time.perf_counter()
                llm.eval(toks)
                dt = time.perf_counter() - t0
            else:
                tok = bos if bos is not None else rnd.randrange(n_vocab)
                t0 = time.perf_counter()
                for _ in range(n):
                    llm.eval([tok])
                    tok = rnd.randrange(n_vocab)
                dt = time.perf_counter() - t0
            if r > 0:
                samples.append(n / dt)
        print(json.dumps({"engine": "llama.cpp (llama-cpp-python %s)" % llama_cpp.__version__, "test": f"{test}{n}",
                          "threads": a.t, "avg_ts": statistics.mean(samples),
                          "stddev_ts": statistics.stdev(samples) if len(samples) > 1 else 0.0,
                          "samples_ts": samples,
                          "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
