"""LoRA adapters through a real `bantam serve`, with the official `ollama` client.

The adapter is written here with `gguf` (llama.cpp's own Python GGUF writer), in the layout
llama.cpp's converter produces: `general.type = adapter`, `adapter.type = lora`,
`adapter.lora.alpha`, F16 `*.lora_a` / `*.lora_b` pairs. It is uploaded to /api/blobs and
a model is created over the catalog model with `adapters`, as `ollama create` does.

What must hold: the adapted name answers what `bantam run --adapter` answers, the base name
what the base answers, even with both served at once; the two names share one engine (the
same per-model counters) and their requests run in the same forward steps.
"""

from __future__ import annotations

import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gguf
import numpy as np
import ollama
import pytest

from conftest import MODEL, REPO

BIN = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam")).resolve()
PROMPT = "The capital of France is"
N = 24


def write_adapter(path: Path, info: dict, arch: str = "llama", seed: int = 3) -> None:
    """A random rank-8 adapter on attn_q, attn_v and ffn_down of every layer of the llama
    model `info` describes (/api/show's model_info), labelled for `arch`."""
    pre = "llama"
    n_layer = info[f"{pre}.block_count"]
    n_embd, n_ff = info[f"{pre}.embedding_length"], info[f"{pre}.feed_forward_length"]
    n_head, n_kv = info[f"{pre}.attention.head_count"], info[f"{pre}.attention.head_count_kv"]
    kv = n_embd // n_head * n_kv
    rank, rng = 8, np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", 16.0)
    for il in range(n_layer):
        for name, cols, rows in (("attn_q", n_embd, n_embd), ("attn_v", n_embd, kv), ("ffn_down", n_ff, n_embd)):
            a = rng.uniform(-1, 1, (rank, cols)) / np.sqrt(cols)
            b = rng.uniform(-1, 1, (rows, rank)) * 0.3 / np.sqrt(rank)
            w.add_tensor(f"blk.{il}.{name}.weight.lora_a", a.astype(np.float16))
            w.add_tensor(f"blk.{il}.{name}.weight.lora_b", b.astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def cli_answer(*extra: str) -> str:
    out = subprocess.run([str(BIN), "run", MODEL, PROMPT, "--raw", "-n", str(N), "--temperature", "0", *extra],
                         check=True, capture_output=True, text=True, timeout=300)
    return out.stdout.rstrip("\n")


def test_adapted_and_base_names_share_an_engine_and_batches(oll, metrics, tmp_path):
    info = dict(oll.show(MODEL).modelinfo)
    path = tmp_path / "lora.gguf"
    write_adapter(path, info)
    digest = oll.create_blob(path)
    name = "bantam-test-lora:latest"
    assert oll.create(model=name, from_=MODEL, adapters={"lora.gguf": digest}).status == "success"
    try:
        want_lora, want_base = cli_answer("--adapter", str(path)), cli_answer()
        assert want_lora != want_base, "the adapter should change the greedy answer"
        assert "ADAPTER" in oll.show(name).modelfile

        def ask(model: str) -> str:
            r = oll.generate(model=model, prompt=PROMPT, raw=True, options={"temperature": 0, "num_predict": N})
            return r.response

        ask(name)  # loaded beside the base, before the counters are read
        ask(MODEL)
        before = metrics()
        models = [name, MODEL] * 4
        with ThreadPoolExecutor(len(models)) as ex:
            answers = list(ex.map(ask, models))
        after = metrics()
        for m, a in zip(models, answers):
            assert a == (want_lora if m == name else want_base), (m, a)

        loaded = {m.model for m in oll.ps().models}
        assert {name, MODEL} <= loaded, loaded
        key = lambda series, m: f'{series}{{model="{m}"}}'
        # One engine: both names report its counters.
        for series in ("bantam_steps_total", "bantam_generated_tokens_total"):
            assert after[key(series, name)] == after[key(series, MODEL)], series
        steps = after[key("bantam_steps_total", MODEL)] - before[key("bantam_steps_total", MODEL)]
        tokens = after[key("bantam_generated_tokens_total", MODEL)] - before[key("bantam_generated_tokens_total", MODEL)]
        assert tokens >= len(models) * (N - 4), tokens
        # Eight sequences, adapted and not, decoded together: far fewer steps than tokens.
        assert steps < tokens / 2, (steps, tokens)
    finally:
        oll.delete(name)


def test_an_adapter_for_another_model_is_refused_clearly(oll, http, tmp_path):
    info = dict(oll.show(MODEL).modelinfo)
    path = tmp_path / "qwen-lora.gguf"
    write_adapter(path, info, arch="qwen2")
    digest = oll.create_blob(path)
    name = "bantam-test-lora-wrong:latest"
    oll.create(model=name, from_=MODEL, adapters={"lora.gguf": digest})
    try:
        with pytest.raises(ollama.ResponseError) as e:
            oll.generate(model=name, prompt="hi", options={"num_predict": 2})
        assert e.value.status_code == 500
        assert "qwen2" in str(e.value) and "llama" in str(e.value), str(e.value)
        # The server is fine, and the base still answers.
        assert oll.generate(model=MODEL, prompt="hi", options={"num_predict": 2}).done
        r = http.post("/api/create", json={"model": "bantam-test-lora-missing", "from": MODEL,
                                           "adapters": {"x.gguf": "sha256:" + "0" * 64}})
        assert r.status_code == 400 and "not been uploaded" in r.json()["error"], r.text
    finally:
        oll.delete(name)
