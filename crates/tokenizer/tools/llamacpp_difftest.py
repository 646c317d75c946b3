#!/usr/bin/env python3
"""Differential test of bantam's tokenizer against llama.cpp on random text.

Needs `llama-cpp-python` (builds llama.cpp from source, about 10-20 minutes on 2 cores) and,
for the vocabulary variants, `gguf`:

    python3 -m venv /tmp/lcpp && /tmp/lcpp/bin/pip install llama-cpp-python gguf
    cargo build --release -p tokenizer --example encode_json
    /tmp/lcpp/bin/python crates/tokenizer/tools/llamacpp_difftest.py [--seed 1] [--n 3000] [--variants]

For each test model (in $BANTAM_MODELS or ~/.bantam/models) it encodes the same random
texts (mixed scripts, whitespace runs, emoji, special-token texts) with both, with special
parsing off and on, and compares ids; then compares every token's piece, the EOG set and the
BOS/EOS settings. `--variants` also writes tensor-less copies of the models' vocabularies with
another `tokenizer.ggml.pre` (llama-bpe, default, gpt-2, qwen2, deepseek-coder, ...) or other
flags, to exercise pre-tokenizers no test model uses. llama-cpp-python bundles a llama.cpp newer
than the reference commit; tokenization has been stable across those versions.
"""

import argparse
import ctypes
import json
import os
import random
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MODELS = os.environ.get("BANTAM_MODELS", os.path.expanduser("~/.bantam/models"))
ENCODER = os.path.join(ROOT, "target", "release", "examples", "encode_json")

POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    " \t\n\r\x0b\x0c\xa0\u3000\u2028\u2029\x85\u2003\u202f\u1680", "你好世界今天天气很好日本語のテキストですカタカナ々〆ー",
    "안녕하세요세계한국어ㄱㄴㅏ", "مرحبابالعالم\u064b\u064e\u0660\u0661", "नमस्तेदुनिया\u093e\u094d\u0966", "สวัสดีชาวโลก\u0e31",
    "ПриветмирЁёαβγΩΣς", "éèêëàâäôöüçñÅåøßæœŁłİıǅ", "\u0301\u0300\u0308\u0327\u20dd\u0489",
    "😀👍🏽🎉👨\u200d👩\u200d👧🏳️\u200d🌈❤️✓∑√π≠∞²³½Ⅻ①", "€£¥©®™°±×÷§¶•…‰′″←→∀∂∈∩∪⊂",
    "\x00\x01\x07\x1b\x1c\x1f\x7f\u200b\u200c\u200d\u2060\ufeff\u00ad",
    "\ue000\uf8ff\U000f0000\u0378\uffff\ufffe\U0001d518\U00010348\U0010fffd\u0e80", "٠١٢٣۴۵६७௧²³¹⁴₀₁ⅠⅡ⑴⒈",
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
            "</s>", "<s>", "<tool_call>", "<0x41>", "▁", "Ġ", "<unk>", "<|fim_pad|>", "<reponame>", "[INST]", "<table>",
            "<|im_", "<em>", "<unused5>", "<mask>", "<|file_sep|>"]
WORDS = ["hello", " world", "The", " quick", "don", "'t", "'S", " 'll", "HTTP", "https://x.y/z?a=1", "foo_bar",
         "CamelCase", "1234567", "3.14", "  ", "\n\n", "    ", "\t", "def", "():", '{"a": 1}', "```", "...", "$19.99"]
VARIANTS = [  # (name, source model, metadata overrides; None deletes the key)
    ("llama-bpe", "smollm2-135m", {"tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": None}),
    ("default", "smollm2-135m", {"tokenizer.ggml.pre": "default"}),
    ("gpt-2", "smollm2-135m", {"tokenizer.ggml.pre": "gpt-2"}),
    ("qwen2", "smollm2-135m", {"tokenizer.ggml.pre": "qwen2"}),
    ("dbrx", "smollm2-135m", {"tokenizer.ggml.pre": "dbrx"}),
    ("falcon", "smollm2-135m", {"tokenizer.ggml.pre": "falcon"}),
    ("deepseek-coder", "smollm2-135m", {"tokenizer.ggml.pre": "deepseek-coder"}),
    ("poro", "smollm2-135m", {"tokenizer.ggml.pre": "poro-chat"}),
    ("viking", "smollm2-135m", {"tokenizer.ggml.pre": "viking"}),
    ("seed-coder", "smollm2-135m", {"tokenizer.ggml.pre": "seed-coder"}),
    ("tekken", "smollm2-135m", {"tokenizer.ggml.pre": "tekken", "tokenizer.ggml.add_bos_token": None}),
    ("chameleon", "smollm2-135m", {"tokenizer.ggml.pre": "chameleon", "tokenizer.ggml.add_bos_token": None}),
    ("qwen-llama3", "qwen2.5-coder-0.5b", {"tokenizer.ggml.pre": "llama-bpe"}),
    ("gemma-space-prefix", "gemma3-270m", {"tokenizer.ggml.add_space_prefix": True}),
    ("gemma-eos", "gemma3-270m", {"tokenizer.ggml.add_eos_token": True, "tokenizer.ggml.add_bos_token": False}),
]


def random_texts(seed, n):
    rng = random.Random(seed)

    def atom():
        r = rng.random()
        if r < 0.08:
            return rng.choice(SPECIALS)
        if r < 0.35:
            return rng.choice(WORDS)
        pool = rng.choice(POOLS)
        k = rng.choice([1, 1, 1, 2, 3, 5, 8, 20])
        return rng.choice(pool) * k if rng.random() < 0.3 else "".join(rng.choice(pool) for _ in range(k))

    texts = ["".join(atom() for _ in range(rng.choice([0, 1, 2, 3, 5, 8, 13, 30]))) for _ in range(n)]
    return texts + [" " * 1000 + "x", "\n" * 300, " \t" * 200 + "\n", "a" + " " * 40 + "\n" * 3 + " " * 7]


def write_variant(src, dst, overrides):
    import gguf

    r = gguf.GGUFReader(src)
    arch = str(bytes(r.fields["general.architecture"].parts[-1]), "utf-8")
    w = gguf.GGUFWriter(dst, arch)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture" or name in overrides:
            continue
        t = f.types[0]
        if t == gguf.GGUFValueType.ARRAY:
            st = f.types[1] if len(f.types) > 1 else None
            if st == gguf.GGUFValueType.STRING:
                val = [str(bytes(f.parts[i]), "utf-8") for i in f.data]
            else:
                val = [f.parts[i].tolist()[0] for i in f.data]
            w.add_key_value(name, val, t, sub_type=st)
        elif t == gguf.GGUFValueType.STRING:
            w.add_key_value(name, str(bytes(f.parts[-1]), "utf-8"), t)
        else:
            w.add_key_value(name, f.parts[-1].tolist()[0], t)
    for k, v in overrides.items():
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def ours(model, *args):
    return json.loads(subprocess.check_output([ENCODER, model, *args]))


def compare_ids(llm, model, texts_path, texts, label):
    failures = 0
    for parse_special in (False, True):
        mine = ours(model, texts_path, "1" if parse_special else "0", "1")
        bad = []
        for text, got in zip(texts, mine):
            want = llm.tokenize(text.encode("utf-8"), add_bos=True, special=parse_special)
            if want != got:
                bad.append((text, want, got))
        print(f"{label} parse_special={parse_special}: {len(bad)} of {len(texts)} differ")
        for text, want, got in bad[:3]:
            i = next((k for k in range(min(len(want), len(got))) if want[k] != got[k]), min(len(want), len(got)))
            print(f"  {text[:120]!r}\n    at {i}: llama.cpp {want[max(0, i - 3):i + 6]} ours {got[max(0, i - 3):i + 6]}")
        failures += len(bad)
    return failures


def compare_vocab(llm, model, label):
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n = llama_cpp.llama_vocab_n_tokens(vocab)
    buf = ctypes.create_string_buffer(1 << 16)

    def piece(i, special):
        k = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, special)
        return buf.raw[:k].hex()

    def opt(x):
        return None if x < 0 else x

    want = {
        "pieces_special": [piece(i, True) for i in range(n)],
        "pieces": [piece(i, False) for i in range(n)],
        "eog": [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)],
        "control": [i for i in range(n) if llama_cpp.llama_vocab_is_control(vocab, i)],
        "bos": opt(llama_cpp.llama_vocab_bos(vocab)),
        "eos": opt(llama_cpp.llama_vocab_eos(vocab)),
        "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
    }
    got = ours(model, "--vocab")
    bad = [k for k in want if want[k] != got[k]]
    print(f"{label} vocabulary: {'same' if not bad else 'DIFFERENT: ' + ', '.join(bad)}")
    return len(bad)


def main():
    import llama_cpp

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--variants", action="store_true")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="difftest-")
    texts = random_texts(a.seed, a.n)
    texts_path = os.path.join(tmp, "texts.json")
    json.dump(texts, open(texts_path, "w"))

    targets = [(m, os.path.join(MODELS, m + ".gguf")) for m in ("smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b")]
    if a.variants:
        for name, src, over in VARIANTS:
            dst = os.path.join(tmp, name + ".gguf")
            write_variant(os.path.join(MODELS, src + ".gguf"), dst, over)
            targets.append((name, dst))
    failures = 0
    for label, path in targets:
        llm = llama_cpp.Llama(model_path=path, vocab_only=True, verbose=False)
        failures += compare_ids(llm, path, texts_path, texts, label)
        failures += compare_vocab(llm, path, label)
    print("all equal" if failures == 0 else f"{failures} differences")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
