"""LoRA training speed of PyTorch + PEFT on the CPU, for the side-by-side in
scripts/finetune-vs-peft.sh: the same chat lines as `bantam finetune` (loss on the assistant
turns, through the model's chat template), packed into sequences of at most CTX tokens,
BATCH sequences per optimizer step (one padded tensor), rank/alpha/targets as given, AdamW.
Prints one JSON line: tokens trained, seconds (after one warm-up step), tokens/s, peak RSS.

Usage: python3 finetune_peft.py HF_DIR DATA.jsonl --threads 2 --ctx 256 --batch 4
       --rank 8 --alpha 16 --steps 8
"""
import argparse
import json
import resource
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def examples(tok, path):
    """(ids, labels) per chat line: labels -100 except the last assistant turn's tokens."""
    for line in open(path):
        msgs = json.loads(line)["messages"]
        text = tok.apply_chat_template(msgs, tokenize=False)
        prefix = tok.apply_chat_template(msgs[:-1], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        n = len(tok(prefix, add_special_tokens=False)["input_ids"])
        yield ids, [-100] * n + ids[n:]


def packed(tok, path, ctx):
    """Whole examples concatenated into sequences of at most `ctx` tokens."""
    ids, labels = [], []
    for i, l in examples(tok, path):
        i, l = i[:ctx], l[:ctx]
        if len(ids) + len(i) > ctx:
            yield ids, labels
            ids, labels = [], []
        ids, labels = ids + i, labels + l
    if ids:
        yield ids, labels


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr)
    seqs = list(packed(tok, a.data, a.ctx))
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tokens, start = 0, None
    for step in range(a.steps + 1):
        batch = [seqs[(step * a.batch + k) % len(seqs)] for k in range(a.batch)]
        n = max(len(ids) for ids, _ in batch)
        ids = torch.tensor([s + [pad] * (n - len(s)) for s, _ in batch])
        labels = torch.tensor([l + [-100] * (n - len(l)) for _, l in batch])
        mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s, _ in batch])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step == 0:
            start = time.perf_counter()  # the first step warms up
        else:
            tokens += sum(len(s) for s, _ in batch)
    secs = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"engine": "pytorch+peft", "torch": torch.__version__, "threads": a.threads, "tokens": tokens, "seconds": round(secs, 2), "tok_per_s": round(tokens / secs, 1), "peak_rss_mib": round(rss, 1), "loss": round(loss.item(), 4)}))


if __name__ == "__main__":
    main()
