"""One training run of `bantam finetune` against an independent reference: the same model,
data, initial adapter and optimizer written in NumPy, differentiated by `autograd`.

The model is the synthetic qwen2 (../shared/reference/synthetic: F32 weights, 3 layers,
biases, grouped-query attention, NeoX rotary embeddings, tied output), read with `gguf`
(llama.cpp's Python reader). The initial adapter (rank 4 on attn_q, attn_v and ffn_down,
`B` non-zero so every gradient is) is written here; `bantam finetune --init` takes it and
runs three AdamW steps on one prompt/completion example. The reference computes the same
loss (mean cross-entropy of the completion and end-of-sequence tokens), its gradient, and
the same three steps in float64. What must hold: every step's loss, and the adapter after
the third step, agree.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import autograd.numpy as anp
import gguf
import numpy as np
from autograd import grad

from conftest import REPO

BIN = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam")).resolve()
MODELS = Path(os.environ.get("BANTAM_MODELS", Path.home() / ".bantam" / "models"))
TARGETS = ("attn_q", "attn_v", "ffn_down")
RANK, ALPHA, LR, STEPS = 4, 8.0, 1e-2, 3


def read_model(path: Path):
    r = gguf.GGUFReader(str(path))
    meta = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.ggml.")}
    meta["eos"] = r.fields["tokenizer.ggml.eos_token_id"].contents()
    w = {t.name: np.array(t.data, dtype=np.float64) for t in r.tensors}
    return meta, w


def forward_loss(lora, w, meta, tokens, loss_at):
    """Mean cross-entropy of tokens[t+1] where loss_at[t], with the adapter `lora`."""
    a = "qwen2"
    ne, nl = meta[f"{a}.embedding_length"], meta[f"{a}.block_count"]
    nh, nkv = meta[f"{a}.attention.head_count"], meta[f"{a}.attention.head_count_kv"]
    eps, base = meta[f"{a}.attention.layer_norm_rms_epsilon"], meta[f"{a}.rope.freq_base"]
    hd = ne // nh
    T = len(tokens)
    f = ALPHA / RANK

    def rms(x, g):
        return x / anp.sqrt(anp.mean(x * x, axis=-1, keepdims=True) + eps) * g

    def proj(x, il, name):
        y = x @ w[f"blk.{il}.{name}.weight"].T
        if (il, name) in lora:
            A, B = lora[(il, name)]
            y = y + f * ((x @ A.T) @ B.T)
        return y

    pos = np.arange(T)[:, None]
    inv = base ** (-2.0 * np.arange(hd // 2) / hd)
    cos, sin = np.cos(pos * inv), np.sin(pos * inv)  # [T, hd/2]

    def rope(x):  # x [T, heads, hd], NeoX pairs (i, i + hd/2)
        x0, x1 = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return anp.concatenate([x0 * c - x1 * s, x0 * s + x1 * c], axis=-1)

    mask = np.tril(np.ones((T, T), dtype=bool))
    x = w["token_embd.weight"][tokens]
    for il in range(nl):
        h = rms(x, w[f"blk.{il}.attn_norm.weight"])
        q = (proj(h, il, "attn_q") + w[f"blk.{il}.attn_q.bias"]).reshape(T, nh, hd)
        k = (proj(h, il, "attn_k") + w[f"blk.{il}.attn_k.bias"]).reshape(T, nkv, hd)
        v = (proj(h, il, "attn_v") + w[f"blk.{il}.attn_v.bias"]).reshape(T, nkv, hd)
        q, k = rope(q), rope(k)
        outs = []
        for hh in range(nh):
            g = hh // (nh // nkv)
            s = (q[:, hh, :] @ k[:, g, :].T) / np.sqrt(hd)
            s = anp.where(mask, s, -1e30)
            s = s - anp.max(s, axis=1, keepdims=True)
            p = anp.exp(s) * mask
            p = p / anp.sum(p, axis=1, keepdims=True)
            outs.append(p @ v[:, g, :])
        att = anp.concatenate(outs, axis=1)
        x = x + proj(att, il, "attn_output")
        h = rms(x, w[f"blk.{il}.ffn_norm.weight"])
        gate, up = proj(h, il, "ffn_gate"), proj(h, il, "ffn_up")
        x = x + proj(gate / (1 + anp.exp(-gate)) * up, il, "ffn_down")
    h = rms(x, w["output_norm.weight"])
    logits = h @ w["token_embd.weight"].T
    at = [t for t in range(T - 1) if loss_at[t]]
    lg = logits[at]
    lse = anp.log(anp.sum(anp.exp(lg - anp.max(lg, axis=1, keepdims=True)), axis=1)) + anp.max(lg, axis=1)
    return anp.sum(lse - lg[np.arange(len(at)), [tokens[t + 1] for t in at]]) / len(at)


def write_adapter(path: Path, lora: dict, arch: str) -> None:
    wr = gguf.GGUFWriter(str(path), arch)
    wr.add_string("general.type", "adapter")
    wr.add_string("adapter.type", "lora")
    wr.add_float32("adapter.lora.alpha", ALPHA)
    for (il, name), (A, B) in sorted(lora.items()):
        wr.add_tensor(f"blk.{il}.{name}.weight.lora_a", A.astype(np.float32))
        wr.add_tensor(f"blk.{il}.{name}.weight.lora_b", B.astype(np.float32))
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def read_adapter(path: Path) -> dict:
    r = gguf.GGUFReader(str(path))
    out: dict = {}
    for t in r.tensors:
        m = re.match(r"blk\.(\d+)\.(\w+)\.weight\.lora_([ab])", t.name)
        out.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = np.array(t.data, dtype=np.float64)
    return {k: (v["a"], v["b"]) for k, v in out.items()}


def tokenize(model: Path, text: str, bos: bool) -> list[int]:
    args = [str(BIN), "tokenize", str(model), text] + ([] if bos else ["--no-bos"])
    return json.loads(subprocess.run(args, check=True, capture_output=True, text=True).stdout)


def test_three_adamw_steps_match_an_autograd_reference(tmp_path):
    model = MODELS / "synthetic" / "qwen2.gguf"
    assert model.exists(), f"{model} is missing: run scripts/fetch-models.sh"
    meta, w = read_model(model)
    ne, ff = meta["qwen2.embedding_length"], meta["qwen2.feed_forward_length"]
    kv = ne // meta["qwen2.attention.head_count"] * meta["qwen2.attention.head_count_kv"]
    rng = np.random.default_rng(7)
    lora = {}
    for il in range(meta["qwen2.block_count"]):
        for name, cols, rows in (("attn_q", ne, ne), ("attn_v", ne, kv), ("ffn_down", ff, ne)):
            A = rng.uniform(-1, 1, (RANK, cols)) / np.sqrt(cols)
            B = rng.uniform(-1, 1, (rows, RANK)) * 0.1
            lora[(il, name)] = (A.astype(np.float32).astype(np.float64), B.astype(np.float32).astype(np.float64))
    init = tmp_path / "init.gguf"
    write_adapter(init, lora, "qwen2")

    prompt, completion = "The cat sat on the", " mat and looked at the door."
    p_ids, c_ids = tokenize(model, prompt, True), tokenize(model, completion, False)
    tokens = p_ids + c_ids + [meta["eos"]]
    loss_at = [t + 1 >= len(p_ids) for t in range(len(tokens))]
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    out = tmp_path / "out.gguf"
    run = subprocess.run([str(BIN), "finetune", str(model), str(data), "-o", str(out), "--init", str(init),
                          "--epochs", str(STEPS), "--batch", "1", "--lr", str(LR), "--warmup", "0",
                          "--val-split", "0", "-t", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    losses = [float(m) for m in re.findall(r"^step \d+/\d+ epoch \d+ loss ([0-9.]+)", run.stderr, re.M)]
    assert len(losses) == STEPS, run.stderr

    # The reference: the same loss, its gradient, AdamW with the same schedule.
    keys = sorted(lora)
    params = [lora[k][i] for k in keys for i in (0, 1)]

    def loss_of(ps):
        return forward_loss({k: (ps[2 * j], ps[2 * j + 1]) for j, k in enumerate(keys)}, w, meta, tokens, loss_at)

    g_of = grad(loss_of)
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    ref_losses = []
    for i in range(STEPS):
        ref_losses.append(float(loss_of(params)))
        gs = g_of(params)
        rate = LR * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * i / STEPS)))
        for j in range(len(params)):
            m[j] = b1 * m[j] + (1 - b1) * gs[j]
            v[j] = b2 * v[j] + (1 - b2) * gs[j] ** 2
            mh, vh = m[j] / (1 - b1 ** (i + 1)), v[j] / (1 - b2 ** (i + 1))
            params[j] = params[j] - rate * mh / (np.sqrt(vh) + eps)
    for i, (got, want) in enumerate(zip(losses, ref_losses)):
        assert abs(got - want) < 1e-3 * max(1.0, abs(want)), f"step {i + 1}: loss {got} against the reference's {want}"
    trained = read_adapter(out)
    worst = 0.0
    for j, k in enumerate(keys):
        for half, (got, start, want) in enumerate(zip(trained[k], lora[k], (params[2 * j], params[2 * j + 1]))):
            moved, ref_moved = got - start, want - start
            err = np.abs(moved - ref_moved).max() / np.abs(ref_moved).max()
            worst = max(worst, err)
            assert err < 1e-3, f"{k} {'AB'[half]}: the update differs from the reference's by {err:.2e} of its size"
    print(f"losses {losses} reference {[round(x, 4) for x in ref_losses]}; worst update difference {worst:.2e}")
