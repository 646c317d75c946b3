"""Model management against a real `bantam serve` (Ollama's /api/pull, /api/create,
/api/copy, /api/delete, /api/show, /api/blobs) with the official `ollama` client, and the
CLI's `create`/`show`/`run` with a Modelfile in an isolated store.

Models created here are named `bantam-test-*` and removed again; the catalog model the
session server uses is never modified.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import ollama
import pytest

from conftest import MODEL, REPO

BIN = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam")).resolve()
LONG_MSGS = [{"role": "user", "content": "Write a very long essay about the history of the Roman Empire."}]


# ------------------------------------------------------------------------ /api/pull


def test_pull_streams_ollama_status_lines(oll):
    statuses = [p.status for p in oll.pull(MODEL, stream=True)]
    assert statuses[0] == "pulling manifest", statuses
    assert "verifying sha256 digest" in statuses, statuses
    assert statuses[-1] == "success", statuses


def test_pull_non_stream_answers_success(oll):
    assert oll.pull(MODEL).status == "success"


def test_pull_unknown_model_is_404_with_close_match(oll):
    with pytest.raises(ollama.ResponseError) as ei:
        oll.pull("smolm2:135m")
    assert ei.value.status_code == 404
    assert "smollm2:135m" in str(ei.value.error)


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/../../b", "/etc/passwd", "x:.."])
def test_pull_path_tricks_are_400(http, name):
    r = http.post("/api/pull", json={"model": name})
    assert r.status_code == 400, r.text
    assert "error" in r.json()


# --------------------------------------------------- create / show / copy / delete


def test_create_show_chat_copy_delete(oll, http):
    name, copy = "bantam-test-terse:latest", "bantam-test-terse2:latest"
    system = "You answer in as few words as possible."
    try:
        r = oll.create(model=name, from_=MODEL, system=system, parameters={"num_predict": 5, "temperature": 0, "stop": ["<|im_end|>"]})
        assert r.status == "success"

        shown = http.post("/api/show", json={"model": name}).json()
        assert shown["system"] == system
        assert "num_predict" in shown["parameters"] and "temperature" in shown["parameters"]
        assert shown["modelfile"].splitlines()[4].startswith("FROM ")
        assert "SYSTEM" in shown["modelfile"] and "PARAMETER num_predict 5" in shown["modelfile"]
        assert shown["details"]["family"] == "llama"

        # The model's num_predict applies when the request sets none, and a request's own
        # option wins over it.
        r = oll.chat(model=name, messages=LONG_MSGS)
        assert r.eval_count <= 5 and r.done_reason == "length", r
        r = oll.chat(model=name, messages=LONG_MSGS, options={"num_predict": 7})
        assert r.eval_count == 7, r

        oll.copy(name, copy)
        listed = {m.model: m for m in oll.list().models}
        assert name in listed and copy in listed
        assert listed[name].digest == listed[copy].digest
        # The same model blob, plus the small system and parameter layers.
        assert listed[MODEL].size < listed[name].size < listed[MODEL].size + 1024

        oll.delete(copy)
        assert copy not in {m.model for m in oll.list().models}
        assert oll.chat(model=name, messages=LONG_MSGS).eval_count <= 5
    finally:
        for n in (name, copy):
            http.request("DELETE", "/api/delete", json={"model": n})
    listed = {m.model for m in oll.list().models}
    assert name not in listed and copy not in listed
    # The catalog model shares the blob and must be intact.
    assert oll.show(MODEL).details.family == "llama"
    with pytest.raises(ollama.ResponseError) as ei:
        oll.delete(name)
    assert ei.value.status_code == 404


def test_create_with_a_missing_adapter_file_is_400_naming_it(http):
    r = http.post("/api/create", json={"model": "bantam-test-adapter", "modelfile": f"FROM {MODEL}\nADAPTER ./lora.gguf\n", "stream": False})
    assert r.status_code == 400, r.text
    assert "ADAPTER ./lora.gguf: no such file" in r.json()["error"], r.text
    assert http.post("/api/show", json={"model": "bantam-test-adapter"}).status_code == 404


def test_create_unknown_parameter_is_400_naming_it(http):
    r = http.post("/api/create", json={"model": "bantam-test-bad", "from": MODEL, "parameters": {"temprature": 0.1}, "stream": False})
    assert r.status_code == 400, r.text
    assert "temprature" in r.json()["error"]


def test_create_from_a_path_outside_the_store_is_refused(http):
    r = http.post("/api/create", json={"model": "bantam-test-escape", "from": "/etc/passwd", "stream": False})
    assert r.status_code == 404, r.text
    assert http.post("/api/show", json={"model": "bantam-test-escape"}).status_code == 404


def test_copy_and_delete_errors(http):
    r = http.post("/api/copy", json={"source": "no-such-model:1b", "destination": "bantam-test-x"})
    assert r.status_code == 404 and "error" in r.json()
    r = http.post("/api/copy", json={"source": MODEL, "destination": "../evil"})
    assert r.status_code == 400 and "error" in r.json()
    r = http.request("DELETE", "/api/delete", json={"model": "no-such-model:1b"})
    assert r.status_code == 404 and "error" in r.json()


def test_blobs_are_checked_against_their_digest(http, oll):
    data = b"GGUF not really a model"
    good = hashlib.sha256(data).hexdigest()
    wrong = hashlib.sha256(b"something else").hexdigest()
    r = http.post(f"/api/blobs/sha256:{wrong}", content=data)
    assert r.status_code == 400 and "sha256" in r.json()["error"]
    assert http.head(f"/api/blobs/sha256:{wrong}").status_code == 404
    for bad in ["sha256:../../etc", "md5:abc", f"sha256:{good[:-1]}"]:
        assert http.head(f"/api/blobs/{bad}").status_code == 400
    model_digest = oll.show(MODEL).modelfile.split("sha256-")[1][:64]
    assert http.head(f"/api/blobs/sha256:{model_digest}").status_code == 200


# ----------------------------------------------------------- CLI with a Modelfile


def run(args, env, timeout=300):
    return subprocess.run([str(BIN), *args], env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_create_show_run_with_modelfile_defaults(tmp_path):
    synthetic = Path(os.environ.get("BANTAM_MODELS", Path.home() / ".bantam" / "models")) / "synthetic" / "llama.gguf"
    assert synthetic.is_file(), f"{synthetic} is missing: scripts/fetch-models.sh makes it"
    env = {**os.environ, "BANTAM_MODELS": str(tmp_path / "store")}
    mf = tmp_path / "Modelfile"
    mf.write_text(
        f'FROM {synthetic}\nPARAMETER num_predict 3\nPARAMETER temperature 0\nPARAMETER stop "</s>"\n'
        'SYSTEM """Be brief.\nVery brief."""\nMESSAGE user hello\nMESSAGE assistant hi\nLICENSE "MIT"\n'
    )
    r = run(["create", "tiny-brief", "-f", str(mf)], env)
    assert r.returncode == 0, r.stderr
    r = run(["show", "tiny-brief", "--parameters"], env)
    assert r.returncode == 0, r.stderr
    assert "num_predict" in r.stdout and '"</s>"' in r.stdout
    assert run(["show", "tiny-brief", "--system"], env).stdout == "Be brief.\nVery brief.\n"
    assert run(["show", "tiny-brief", "--license"], env).stdout == "MIT\n"
    modelfile = run(["show", "tiny-brief", "--modelfile"], env).stdout
    assert "FROM " + str(tmp_path / "store" / "blobs" / "sha256-") in modelfile
    assert "MESSAGE user" in modelfile
    plan = run(["show", "tiny-brief"], env).stdout
    assert "Memory plan" in plan and "KV cache" in plan
    r = run(["run", "tiny-brief", "--raw", "--verbose", "Once upon a time"], env)
    assert r.returncode == 0, r.stderr
    counts = [line for line in r.stderr.splitlines() if line.startswith("eval count:")]
    assert counts and int(counts[0].split()[2]) <= 3, r.stderr
    r = run(["run", "tiny-brief", "--raw", "--verbose", "-n", "6", "Once upon a time"], env)
    counts = [line for line in r.stderr.splitlines() if line.startswith("eval count:")]
    assert counts and int(counts[0].split()[2]) == 6, r.stderr


def test_cli_create_refuses_a_bad_adapter_line_and_bad_parameters(tmp_path):
    env = {**os.environ, "BANTAM_MODELS": str(tmp_path / "store")}
    mf = tmp_path / "Modelfile"
    for text, expect in [("FROM x.gguf\nADAPTER\n", "ADAPTER needs a path"), ("FROM x.gguf\nPARAMETER num_ctx lots\n", "takes an integer")]:
        mf.write_text(text)
        r = run(["create", "broken", "-f", str(mf)], env)
        assert r.returncode != 0 and expect in r.stderr, r.stderr
    assert not (tmp_path / "store" / "manifests").exists()


def test_cli_ps_lists_what_the_server_has_loaded(server, oll):
    oll.generate(model=MODEL, prompt="hi", options={"num_predict": 1})
    r = subprocess.run([str(BIN), "ps", "--host", f"127.0.0.1:{server.port}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "ID", "SIZE"], r.stdout
    assert any(line.startswith(MODEL) for line in lines[1:]), r.stdout


def test_cli_pull_without_network_says_so(tmp_path):
    env = {**os.environ, "BANTAM_MODELS": str(tmp_path / "store"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    r = run(["pull", "--quiet", "hf.co/org/repo:Q4_K_M"], env, timeout=120)
    assert r.returncode != 0
    assert "cannot reach http://127.0.0.1:9" in r.stderr and "network connection" in r.stderr, r.stderr
    assert not (tmp_path / "store" / "manifests").exists()


def test_fresh_store_pulls_the_catalog_model_on_first_use(tmp_path):
    """`bantam run` and a request to `bantam serve` pull a catalog model that is not in the
    store (from the real package index), then answer."""
    env = {**os.environ, "BANTAM_MODELS": str(tmp_path / "store")}
    r = run(["run", MODEL, "--temperature", "0", "-n", "4", "Say hi"], env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "pulling it" in r.stderr and "success" in r.stderr, r.stderr
    assert r.stdout.strip(), r.stdout
    # A server with an empty store: the first request pulls the model.
    (tmp_path / "store2").mkdir()
    env2 = {**os.environ, "BANTAM_MODELS": str(tmp_path / "store2")}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(BIN), "serve", "--port", str(port), "--ctx-size", "512", "--max-parallel", "2"], env=env2, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=600)
        deadline = time.monotonic() + 60
        while True:
            try:
                client.ps()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        r = client.generate(model=MODEL, prompt="Say hi", options={"temperature": 0, "num_predict": 4})
        assert r.done and r.eval_count > 0
        assert MODEL in {m.model for m in client.list().models}
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    assert "pull smollm2:135m: success" in (tmp_path / "serve.log").read_text()


# ------------------------------------------------------------ create with quantize


def test_create_with_quantize_from_an_f16_model(oll, http):
    """/api/create's `quantize` (as Ollama takes it) from an F16 file inside the store, and the
    refusals: an unknown type (400) and an already quantized model."""
    models = Path(os.environ.get("BANTAM_MODELS", Path.home() / ".bantam" / "models"))
    src_dir = models / "bantam-test-f16"
    src_dir.mkdir(exist_ok=True)
    f16 = src_dir / "smollm2-f16.gguf"
    try:
        r = run(["quantize", "--allow-requantize", MODEL, str(f16), "F16"], os.environ.copy())
        assert r.returncode == 0, r.stderr
        statuses = [p.status for p in oll.create(model="bantam-test-q8", from_=str(f16), quantize="q8_0", stream=True)]
        assert "quantizing model to q8_0" in statuses, statuses
        assert statuses[-1] == "success", statuses
        shown = oll.show("bantam-test-q8")
        assert shown.details.quantization_level == "Q8_0", shown.details
        out = oll.generate(model="bantam-test-q8", prompt="The capital of France is", options={"num_predict": 4, "temperature": 0})
        assert out.response.strip(), out
        r = http.post("/api/create", json={"model": "bantam-test-q9", "from": str(f16), "quantize": "q9_9", "stream": False})
        assert r.status_code == 400 and "q9_9" in r.json()["error"], r.text
        r = http.post("/api/create", json={"model": "bantam-test-rq", "from": "bantam-test-q8", "quantize": "q4_0", "stream": False})
        assert r.status_code == 400 and "already quantized" in r.json()["error"], r.text
        assert http.post("/api/show", json={"model": "bantam-test-rq"}).status_code == 404
    finally:
        http.request("DELETE", "/api/delete", json={"model": "bantam-test-q8"})
        f16.unlink(missing_ok=True)
        src_dir.rmdir()
