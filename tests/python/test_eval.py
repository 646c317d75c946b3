"""`bantam eval` end to end on the real smollm2:135m: the summary's numbers are re-derived
here, independently, from the per-item file; bad input is refused naming the line."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam"))
MODEL = "smollm2:135m"

SENTIMENT = [
    ("I loved this film, it was wonderful.", "positive"),
    ("What a great and happy day!", "positive"),
    ("The food was delicious and the staff were kind.", "positive"),
    ("Absolutely fantastic service.", "positive"),
    ("This book is brilliant.", "positive"),
    ("I hated this film, it was awful.", "negative"),
    ("What a terrible and sad day.", "negative"),
    ("The food was cold and the staff were rude.", "negative"),
    ("Absolutely horrible service.", "negative"),
    ("This book is boring and bad.", "negative"),
]

CAPITALS = [
    ("What is the capital of France?", "Paris"),
    ("What is the capital of Italy?", ["Rome", "Roma"]),
    ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Spain?", "Madrid"),
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_(*args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    p = subprocess.run([str(BIN), "eval", *args, "-t", "2"], capture_output=True, text=True, timeout=600, env=env)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def normalise(s: str) -> str:
    s = "".join(c for c in s.lower() if not (c.isascii() and not c.isalnum() and not c.isspace()))
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def percentile(v, q):
    s = sorted(v)
    rank = q / 100 * (len(s) - 1)
    lo, hi = math.floor(rank), math.ceil(rank)
    return s[lo] + (s[hi] - s[lo]) * (rank - lo)


def test_classify_summary_rescored_from_the_items(tmp_path):
    data = write_jsonl(tmp_path / "sentiment.jsonl", [{"id": f"s{i}", "input": t, "label": l} for i, (t, l) in enumerate(SENTIMENT)])
    summary_path = tmp_path / "summary.json"
    out = eval_(str(data), "--models", MODEL, "--kind", "classify", "--labels", "positive,negative",
                "--json", str(summary_path), "--hardware-cost", "0.5").stdout
    assert "| " + MODEL in out
    summary = json.loads(summary_path.read_text())
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]
    (m,) = summary["models"]
    assert len(items) == m["n"] == len(SENTIMENT)
    # Every prediction is a label (choice decoding), and "correct" means it is the gold one.
    for it in items:
        assert it["prediction"] in ("positive", "negative")
        assert it["correct"] == (it["prediction"] == it["gold"])
    correct = sum(it["correct"] for it in items)
    assert m["correct"] == correct
    assert m["accuracy"] == correct / len(items)
    lo, hi = m["accuracy_ci"]
    assert lo <= m["accuracy"] <= hi
    # Macro-F1 and the confusion matrix from the items.
    f1s = []
    for label in ("positive", "negative"):
        tp = sum(1 for it in items if it["gold"] == label and it["prediction"] == label)
        fp = sum(1 for it in items if it["gold"] != label and it["prediction"] == label)
        fn = sum(1 for it in items if it["gold"] == label and it["prediction"] != label)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    assert m["macro_f1"] == pytest.approx(sum(f1s) / 2, abs=1e-12)
    for gold, row in m["confusion"].items():
        for pred, count in row.items():
            assert count == sum(1 for it in items if it["gold"] == gold and it["prediction"] == pred)
    for key in ("latency_ms", "ttft_ms"):
        values = [it[key] for it in items]
        for q in (50, 95, 99):
            assert m[key][f"p{q}"] == pytest.approx(percentile(values, q), abs=1e-9)
    assert m["completion_tokens"] == sum(it["completion_tokens"] for it in items)
    assert m["prompt_tokens"] == sum(it["prompt_tokens"] for it in items)
    assert m["peak_rss_mib"] > 50
    assert m["cost_per_success_usd"] == pytest.approx(m["cost_usd"] / correct) if correct else m["cost_per_success_usd"] is None
    assert summary["data_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    # Greedy: a second run gives the same predictions.
    summary2 = tmp_path / "again.json"
    eval_(str(data), "--models", MODEL, "--kind", "classify", "--labels", "positive,negative", "--json", str(summary2))
    again = [json.loads(l) for l in Path(json.loads(summary2.read_text())["items_file"]).read_text().splitlines()]
    assert [it["prediction"] for it in again] == [it["prediction"] for it in items]


def test_exact_and_extract_and_a_paired_comparison(tmp_path):
    data = write_jsonl(tmp_path / "capitals.jsonl", [{"input": q, "answer": a} for q, a in CAPITALS])
    summary_path = tmp_path / "exact.json"
    out = eval_(str(data), "--models", f"{MODEL},{MODEL}", "--kind", "exact", "--max-tokens", "8", "--json", str(summary_path)).stdout
    assert "McNemar" in out
    summary = json.loads(summary_path.read_text())
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]
    for it in items:
        answers = it["gold"] if isinstance(it["gold"], list) else [it["gold"]]
        assert it["correct"] == any(normalise(a) == normalise(it["prediction"]) for a in answers)
    a, b = summary["models"]
    assert a["correct"] == b["correct"] == sum(it["correct"] for it in items) // 2
    (c,) = summary["comparisons"]
    assert c["a_only"] == c["b_only"] == 0 and c["p_value"] == 1.0 and not c["significant"]

    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}},
                                  "required": ["name"]}))
    data = write_jsonl(tmp_path / "people.jsonl", [{"input": "Ada Lovelace wrote the first program.", "expected": {"name": "Ada Lovelace"}},
                                                   {"input": "Alan Turing broke codes.", "expected": {"name": "Alan Turing"}}])
    summary_path = tmp_path / "extract.json"
    eval_(str(data), "--models", MODEL, "--kind", "extract", "--schema", str(schema), "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]
    for it in items:
        got = json.loads(it["prediction"])  # held to the schema: always JSON
        assert set(got) == {"name"}
        assert it["correct"] == (got == it["gold"])
    assert summary["models"][0]["field_f1"] == pytest.approx(sum(it["field_f1"] for it in items) / len(items))


@pytest.mark.parametrize("lines, args, needle", [
    (['{"input": "a", "label": "positive"}', "{not json"], ["--kind", "classify", "--labels", "positive,negative"], r":2: not JSON"),
    (['{"input": "a", "label": "neutral"}'], ["--kind", "classify", "--labels", "positive,negative"], r":1: label \"neutral\" is not one of --labels"),
    (['{"input": "a"}'], ["--kind", "exact"], r":1: \"answer\""),
    (['{"label": "positive"}'], ["--kind", "classify", "--labels", "positive"], r":1: \"input\" is missing"),
    (['{"input": "a", "label": "positive"}'], ["--kind", "classify"], r"needs --labels"),
])
def test_bad_data_is_refused_naming_the_line(tmp_path, lines, args, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    p = eval_(str(data), "--models", MODEL, *args, check=False)
    assert p.returncode != 0
    assert re.search(needle, p.stderr), p.stderr


def test_unknown_model_and_bad_schema_are_refused(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": "a", "expected": {"x": 1}}])
    schema = tmp_path / "s.json"
    schema.write_text('{"type": "object", "properties": {"x": {"type": "nonsense"}}}')
    p = eval_(str(data), "--models", MODEL, "--kind", "extract", "--schema", str(schema), check=False)
    assert p.returncode != 0 and "schema" in p.stderr.lower(), p.stderr
    p = eval_(str(data), "--models", "no-such-model:1b", "--kind", "extract", "--schema", str(schema), check=False)
    assert p.returncode != 0 and "no-such-model" in p.stderr, p.stderr


def test_classify_by_label_loglikelihood(tmp_path):
    data = write_jsonl(tmp_path / "sentiment.jsonl", [{"input": t, "label": l} for t, l in SENTIMENT])
    summary_path = tmp_path / "ll.json"
    eval_(str(data), "--models", MODEL, "--kind", "classify", "--labels", "positive,negative", "--score", "loglik", "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]
    assert all(it["prediction"] in ("positive", "negative") and it["completion_tokens"] == 0 for it in items)
    assert summary["models"][0]["correct"] == sum(it["correct"] for it in items)


def test_an_upstream_endpoint_is_scored_and_priced_beside_a_local_model(tmp_path, base_url):
    # The session's `bantam serve` stands in for a hosted OpenAI-compatible API.
    data = write_jsonl(tmp_path / "sentiment.jsonl", [{"input": t, "label": l} for t, l in SENTIMENT])
    summary_path = tmp_path / "up.json"
    out = eval_(str(data), "--models", MODEL, "--upstream", f"api={base_url},model={MODEL},price=0.15/0.6",
                "--kind", "classify", "--labels", "positive,negative", "--hardware-cost", "0.05", "--json", str(summary_path)).stdout
    assert "cheaper than api above" in out
    summary = json.loads(summary_path.read_text())
    local, api = summary["models"]
    assert api["model"] == "api" and api["upstream"]["model"] == MODEL and api["peak_rss_mib"] is None
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines() if json.loads(l)["model"] == "api"]
    assert len(items) == api["n"] == len(SENTIMENT)
    assert api["correct"] == sum(it["correct"] for it in items)
    # Streamed: the first content comes no later than the end, and the usage chunk counts tokens.
    assert all(0 < it["ttft_ms"] <= it["latency_ms"] and it["prompt_tokens"] > 0 and it["completion_tokens"] > 0 for it in items)
    cost = sum(it["prompt_tokens"] * 0.15 + it["completion_tokens"] * 0.6 for it in items) / 1e6
    assert api["cost_usd"] == pytest.approx(cost, rel=1e-9)
    (b,) = summary["break_even"]
    assert (b["local"], b["upstream"]) == (MODEL, "api")
    assert b["requests_per_month"] == pytest.approx(0.05 * 730 / (cost / len(items)), rel=1e-9)
    assert b["local_capacity_per_month"] == pytest.approx(local["items_per_s"] * 730 * 3600, rel=1e-9)


def test_a_task_file_with_gzipped_items_and_pinning_the_winner(tmp_path):
    import gzip
    with gzip.open(tmp_path / "sentiment.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({"input": t, "label": l}) + "\n" for t, l in SENTIMENT)
    (tmp_path / "task.toml").write_text(
        'kind = "classify"\ndata = "sentiment.jsonl.gz"\nlabels = ["positive", "negative"]\n'
        f'models = ["{MODEL}"]\nmax_tokens = 4\n')
    pin = f"eval-pin-test-{os.getpid()}"
    summary_path = tmp_path / "s.json"
    try:
        out = eval_(str(tmp_path / "task.toml"), "--pin", pin, "--json", str(summary_path)).stdout
        assert f"pinned {MODEL} as {pin}" in out
        summary = json.loads(summary_path.read_text())
        assert summary["kind"] == "classify" and summary["models"][0]["n"] == len(SENTIMENT)
        listed = subprocess.run([str(BIN), "list"], capture_output=True, text=True, check=True).stdout
        assert pin in listed
    finally:
        subprocess.run([str(BIN), "rm", pin], capture_output=True)
    (tmp_path / "bad.toml").write_text('kind = "classify"\ncolour = "red"\n')
    p = eval_(str(tmp_path / "bad.toml"), check=False)
    assert p.returncode != 0 and "colour" in p.stderr


def test_the_hardware_cost_comes_from_the_flag_the_environment_or_the_config_file(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"input": t, "label": l} for t, l in SENTIMENT[:2]])
    config = tmp_path / "config.toml"
    config.write_text("hardware_cost_per_hour = 0.25\n")
    base = {k: v for k, v in os.environ.items() if k != "BANTAM_HARDWARE_COST"}
    args = (str(data), "--models", MODEL, "--kind", "classify", "--labels", "positive,negative", "--json", str(tmp_path / "s.json"))

    def cost(extra=(), **env):
        eval_(*args, *extra, env={**base, "BANTAM_CONFIG": str(config), **env})
        return json.loads((tmp_path / "s.json").read_text())["hardware_cost_per_hour_usd"]

    assert cost() == 0.25
    assert cost(BANTAM_HARDWARE_COST="0.5") == 0.5
    assert cost(("--hardware-cost", "2"), BANTAM_HARDWARE_COST="0.5") == 2.0
    config.write_text('hardware_cost_per_hour = "cheap"\n')
    p = eval_(*args, check=False, env={**base, "BANTAM_CONFIG": str(config)})
    assert p.returncode != 0 and "hardware_cost_per_hour" in p.stderr


def vader_words(n_per_label: int = 12) -> list[dict]:
    """A public labelled set from the package index: VADER's sentiment lexicon (the
    `vaderSentiment` wheel, human-rated words), its clearly positive and negative words.
    Fetched with pip into a cache outside the work tree."""
    import zipfile
    cache = Path(os.environ.get("BANTAM_TEST_DATA", Path.home() / ".cache" / "bantam-test-data"))
    wheel = cache / "vaderSentiment-3.3.2-py2.py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(["python3", "-m", "pip", "download", "vaderSentiment==3.3.2", "--no-deps", "-q", "-d", str(cache)], check=True, timeout=300)
    lexicon = zipfile.ZipFile(wheel).read("vaderSentiment/vader_lexicon.txt").decode("utf-8", "replace")
    rated = [(w, float(m)) for w, m, *_ in (l.split("\t") for l in lexicon.splitlines() if l.count("\t") >= 3)
             if w.isalpha() and len(w) >= 5 and abs(float(m)) >= 2.5]
    pos = sorted(w for w, m in rated if m > 0)
    neg = sorted(w for w, m in rated if m < 0)
    pick = lambda ws: ws[:: max(1, len(ws) // n_per_label)][:n_per_label]
    return [{"id": w, "input": w, "label": "positive"} for w in pick(pos)] + [{"id": w, "input": w, "label": "negative"} for w in pick(neg)]


def test_a_public_labelled_set_from_the_package_index(tmp_path):
    rows = vader_words()
    assert len(rows) == 24
    data = write_jsonl(tmp_path / "vader.jsonl", rows)
    summary_path = tmp_path / "vader.json"
    eval_(str(data), "--models", MODEL, "--kind", "classify", "--labels", "positive,negative",
          "--prompt", 'Is the word "{input}" positive or negative?', "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    items = [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]
    (m,) = summary["models"]
    assert [it["id"] for it in items] == [r["id"] for r in rows]
    assert m["correct"] == sum(it["prediction"] == it["gold"] for it in items)
    assert m["accuracy"] == m["correct"] / 24
