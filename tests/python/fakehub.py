"""A fake Hugging Face hub on 127.0.0.1 for the `bantam pull` tests.

It serves the hub's URL layout from memory:

    GET       /api/models/{org}/{repo}/tree/main      the repo's files, as the hub lists them
    HEAD, GET /{org}/{repo}/resolve/main/{file}       a file, with the hub's X-Linked-* headers
    HEAD, GET /files/{file}                           the same file as a plain web server would

Files honour `Range: bytes=START-[END]` (206 + Content-Range). Every request is recorded
(method, path, Range, Authorization) for the tests to inspect, and per-file faults can be
armed for the next K requests: a dropped connection, corrupted bytes or an error status.
`rate` throttles bodies; `token` makes the repo routes answer 401 without `Bearer <token>`.

    with FakeHub() as hub:
        hub.add_repo("org/Repo-GGUF", {"repo-Q4_K_M.gguf": data})
        hub.fault("repo-Q4_K_M.gguf", drop_after=1_000_000)  # the next GET is cut short
        ...  # point HF_ENDPOINT at hub.url
        assert any(r.range_start for r in hub.requests_for("repo-Q4_K_M.gguf"))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/main/?$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/main/(.+)$")
_FILES = re.compile(r"^/files/(.+)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass(frozen=True)
class Request:
    """One request as the hub saw it."""

    method: str
    path: str  # URL path, percent-decoded, without the query (a CONNECT's target as sent)
    range: str | None  # the Range header, verbatim
    authorization: str | None

    @property
    def range_start(self) -> int | None:
        """START of `Range: bytes=START-...`; None without a Range header (or a suffix range)."""
        m = _RANGE.match(self.range or "")
        return int(m.group(1)) if m and m.group(1) else None


@dataclass
class Fault:
    """Misbehaviour for one file's next `times` requests (None: every request from now on).

    `status` answers HEAD and GET with that status; `drop_after` and `corrupt` act on GET
    bodies only (so a HEAD does not use them up)."""

    drop_after: int | None = None  # send the full Content-Length, close after N body bytes
    corrupt: bool = False  # flip some body bytes, keep every length
    status: int | None = None  # answer with this status and a JSON error instead
    times: int | None = 1


@dataclass(frozen=True)
class HubFile:
    name: str
    data: bytes
    sha256: str
    git_oid: str  # what the tree lists as the file's git object id
    lfs: bool  # large files are LFS pointers in git: the tree gives their sha256

    @classmethod
    def make(cls, name: str, data: bytes) -> HubFile:
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = name.endswith(".gguf")
        # In git an LFS file is its pointer; the git oid is the sha1 of that blob.
        git_blob = _lfs_pointer(sha256, len(data)) if lfs else data
        git_oid = hashlib.sha1(b"blob %d\0" % len(git_blob) + git_blob).hexdigest()
        return cls(name, data, sha256, git_oid, lfs)

    def tree_entry(self) -> dict:
        entry: dict = {"type": "file", "oid": self.git_oid, "size": len(self.data), "path": self.name}
        if self.lfs:
            pointer = _lfs_pointer(self.sha256, len(self.data))
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(pointer)}
        return entry


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


class FakeHub:
    """The hub, listening on a free 127.0.0.1 port from construction until `close()`."""

    def __init__(self) -> None:
        self.rate: int | None = None  # bytes per second per response body; None: full speed
        self.token: str | None = None  # when set, tree and resolve need `Bearer <token>`
        self._lock = threading.Lock()
        self._repos: dict[str, list[str]] = {}
        self._files: dict[str, HubFile] = {}
        self._faults: dict[str, Fault] = {}
        self._requests: list[Request] = []
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.hub = self
        self.port: int = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fakehub", daemon=True)
        self._thread.start()

    # -------------------------------------------------------------- setup and inspection

    def add_repo(self, repo: str, files: dict[str, bytes]) -> None:
        """Publish `files` (name -> content) as repo "org/name"; also served at /files/{name}."""
        made = [HubFile.make(name, data) for name, data in files.items()]
        with self._lock:
            self._repos[repo] = [f.name for f in made]
            self._files.update((f.name, f) for f in made)

    def file(self, name: str) -> HubFile:
        return self._files[name]

    def fault(self, name: str, **kwargs) -> None:
        """Arm a `Fault(**kwargs)` for file `name`, replacing any armed one."""
        with self._lock:
            self._faults[name] = Fault(**kwargs)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    def requests_for(self, name: str, method: str | None = None) -> list[Request]:
        """Requests for file `name` (any route), optionally only those with `method`."""
        return [r for r in self.requests
                if r.path.endswith("/" + name) and (method is None or r.method == method)]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ used by the handler

    def _record(self, request: Request) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_fault(self, name: str, method: str) -> Fault | None:
        """The fault that applies to this request, used up by one if it is counted."""
        with self._lock:
            fault = self._faults.get(name)
            if fault is None or (fault.status is None and method != "GET"):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    del self._faults[name]
            return dataclasses.replace(fault)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # close() must not wait for a throttled body to a dead client
    hub: FakeHub


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fakehub/1"
    server: _Server

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's signature
        pass  # quiet: the tests print what they need

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_CONNECT(self) -> None:
        # Only reached when a client uses this hub as its proxy (the "no network" tests do
        # that on purpose): recorded, then refused.
        self._serve(head=False)

    def _serve(self, head: bool) -> None:
        hub = self.server.hub
        path = unquote(urlsplit(self.path).path) if self.command != "CONNECT" else self.path
        hub._record(Request(self.command, path, self.headers.get("Range"),
                            self.headers.get("Authorization")))
        try:
            self._route(hub, path, head)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True  # the client went away; nothing to tell it

    def _route(self, hub: FakeHub, path: str, head: bool) -> None:
        if self.command == "CONNECT":
            self._error(HTTPStatus.FORBIDDEN, "this hub is not a proxy", head)
        elif m := _TREE.match(path):
            if self._authorized(hub, head):
                self._tree(hub, m.group(1), head)
        elif m := _RESOLVE.match(path):
            if self._authorized(hub, head):
                repo, name = m.groups()
                if repo not in hub._repos:
                    self._error(HTTPStatus.NOT_FOUND, "Repository not found", head, "RepoNotFound")
                elif name not in hub._repos[repo]:
                    self._error(HTTPStatus.NOT_FOUND, "Entry not found", head, "EntryNotFound")
                else:
                    self._file(hub, hub._files[name], head, linked=True)
        elif (m := _FILES.match(path)) and m.group(1) in hub._files:
            self._file(hub, hub._files[m.group(1)], head, linked=False)
        else:
            self._error(HTTPStatus.NOT_FOUND, "Not found", head)

    def _authorized(self, hub: FakeHub, head: bool) -> bool:
        if hub.token is None or self.headers.get("Authorization") == f"Bearer {hub.token}":
            return True
        self._error(HTTPStatus.UNAUTHORIZED, "Invalid credentials in Authorization header", head)
        return False

    def _tree(self, hub: FakeHub, repo: str, head: bool) -> None:
        if repo not in hub._repos:
            self._error(HTTPStatus.NOT_FOUND, "Repository not found", head, "RepoNotFound")
            return
        entries = [hub._files[name].tree_entry() for name in hub._repos[repo]]
        self._send(HTTPStatus.OK, json.dumps(entries).encode(), "application/json", head)

    def _file(self, hub: FakeHub, f: HubFile, head: bool, linked: bool) -> None:
        fault = hub._take_fault(f.name, self.command)
        if fault is not None and fault.status is not None:
            self._error(HTTPStatus(fault.status), HTTPStatus(fault.status).phrase, head)
            return
        total = len(f.data)
        start, end = 0, total - 1
        status = HTTPStatus.OK
        if (rng := self.headers.get("Range")) is not None and (m := _RANGE.match(rng.strip())):
            first, last = m.groups()
            if first:
                start, end = int(first), (min(int(last), total - 1) if last else total - 1)
            elif last:  # bytes=-N: the last N bytes
                start = max(total - int(last), 0)
            if (not first and not last) or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        if linked:
            self.send_header("ETag", f'"{f.sha256}"')
            self.send_header("X-Linked-Etag", f'"{f.sha256}"')
            self.send_header("X-Linked-Size", str(total))
        else:
            self.send_header("ETag", f'"{f.git_oid[:8]}-{total:x}"')  # nginx-like, not a digest
        self.end_headers()
        if head:
            return

        body = memoryview(f.data)[start:end + 1]
        if fault is not None and fault.corrupt:
            spoiled = bytearray(body)
            for i in range(0, len(spoiled), 1 << 20):  # one byte in every MiB, the first included
                spoiled[i] ^= 0xFF
            body = memoryview(bytes(spoiled))
        if fault is not None and fault.drop_after is not None and fault.drop_after < len(body):
            self._write(body[:fault.drop_after], hub.rate)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(body, hub.rate)

    def _write(self, body: memoryview, rate: int | None) -> None:
        """Send `body`; at `rate` bytes per second if given, in chunks of about 1/20 s."""
        chunk = max(1024, rate // 20) if rate else 1 << 16
        started = time.monotonic()
        sent = 0
        while sent < len(body):
            self.wfile.write(body[sent:sent + chunk])
            sent += len(body[sent:sent + chunk])
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)

    def _error(self, status: HTTPStatus, message: str, head: bool, code: str | None = None) -> None:
        extra = {"X-Error-Code": code} if code else {}
        self._send(status, json.dumps({"error": message}).encode(), "application/json", head, extra)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, head: bool,
              extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)
