"""A small in-memory fake of the Hugging Face Hub HTTP API, for tests (standard library only).

It speaks enough of the Hub protocol for the real ``huggingface_hub`` client (tested with 2.4, with
``HF_HUB_DISABLE_XET=1``) to create repos, push commits with regular and LFS files, and download them back, and for
``datasets.load_dataset`` (5.x) to read a dataset repo's ``configs:`` and Parquet files through it:

* ``POST /api/repos/create`` (a Space needs its ``sdk``, one of ``SPACE_SDKS``, as the Hub does),
  ``DELETE /api/repos/delete``, ``POST /api/validate-yaml``, ``GET /api/whoami-v2``
* ``GET /api/{models,datasets,spaces}/{repo}[/revision/{rev}]`` (repo info with ``sha`` and ``siblings``; a Space's
  ``sdk``, which a commit changing the ``sdk:`` of its README's YAML changes, as on the Hub)
* ``GET /api/.../{repo}/tree/{rev}[/{path}]`` (``recursive``, cursor paging through a ``Link`` header)
* ``POST /api/.../{repo}/paths-info/{rev}``, ``GET .../refs``, ``GET .../commits/{rev}``, ``POST .../branch/{name}``
* ``POST /api/.../{repo}/preupload/{rev}`` (decides ``regular`` or ``lfs`` like the Hub does)
* ``POST /{repo}.git/info/lfs/objects/batch``, the "presigned" upload URL it hands out, and the verify URL
* ``POST /api/.../{repo}/commit/{rev}`` (NDJSON body, applied atomically)
* ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``/``X-Linked-Size``)

Use :func:`running_hub` in tests: it starts a server on ``127.0.0.1``, points ``huggingface_hub`` (environment
variables *and* the module constants it copied at import time) at it with a fresh cache, and restores everything
on exit.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

DEFAULT_TOKEN = "hf_test_token"
DEFAULT_USERNAME = "test-user"
# Files above this size always go through LFS (the Hub uses 10 MB).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
# Same LFS patterns as the ``.gitattributes`` the Hub writes in every new repo.
DEFAULT_LFS_PATTERNS = (
    "*.7z *.arrow *.bin *.bz2 *.ckpt *.ftz *.gz *.h5 *.joblib *.lfs.* *.mlmodel *.model *.msgpack *.npy *.npz "
    "*.onnx *.ot *.parquet *.pb *.pickle *.pkl *.pt *.pth *.rar *.safetensors saved_model/**/* *.tar.* *.tar "
    "*.tflite *.tgz *.wasm *.xz *.zip *.zst *tfevents*"
).split()
DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in DEFAULT_LFS_PATTERNS).encode()

SPACE_SDKS = ("gradio", "docker", "static", "streamlit")
_REPO_TYPE_PLURALS = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_SHA40 = re.compile(r"[0-9a-f]{40}")


# ---------------------------------------------------------------------------------------------------------------------
# Data model
# ---------------------------------------------------------------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content (what the Hub reports for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(data: bytes) -> bytes:
    """The git-lfs pointer file that git stores in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(data).hexdigest()}\nsize {len(data)}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass
class Commit:
    """One commit: a full snapshot of the repo (``files``: path -> bytes); ``lfs_paths`` are stored via LFS."""

    oid: str
    title: str
    message: str
    parents: list[str]
    files: dict[str, bytes]
    lfs_paths: frozenset[str]
    date: str

    def etag(self, path: str) -> str:
        data = self.files[path]
        return hashlib.sha256(data).hexdigest() if path in self.lfs_paths else git_blob_sha1(data)

    def file_entry(self, path: str) -> dict[str, Any]:
        """The JSON the tree / paths-info endpoints give for a file."""
        data = self.files[path]
        if path in self.lfs_paths:
            pointer = lfs_pointer(data)
            return {
                "type": "file",
                "oid": git_blob_sha1(pointer),
                "size": len(data),
                "path": path,
                "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": len(pointer)},
            }
        return {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": path}

    def folder_entry(self, path: str) -> dict[str, Any]:
        prefix = path + "/"
        inner = sorted(f"{p}:{self.etag(p)}" for p in self.files if p.startswith(prefix))
        return {"type": "directory", "oid": hashlib.sha1("\n".join(inner).encode()).hexdigest(), "path": path}

    def folders(self) -> set[str]:
        out = set()
        for path in self.files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                out.add("/".join(parts[:i]))
        return out


@dataclass
class FakeRepo:
    """A repo of the fake Hub. ``commits`` holds every commit ever made, oldest first."""

    repo_id: str
    repo_type: str = "model"
    private: bool = False
    commits: list[Commit] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    lfs_objects: dict[str, bytes] = field(default_factory=dict)
    created_at: str = field(default_factory=_now)
    next_pr: int = 1
    sdk: str | None = None  # a Space's SDK

    def commit(self, oid: str) -> Commit:
        for c in self.commits:
            if c.oid == oid:
                return c
        raise KeyError(oid)

    @property
    def head(self) -> Commit:
        """The latest commit of ``main``."""
        return self.commit(self.branches["main"])

    @property
    def files(self) -> dict[str, bytes]:
        """Files at the head of ``main``."""
        return self.head.files

    def history(self, branch: str = "main") -> list[str]:
        """Commit oids reachable from ``branch`` (first parents), oldest first."""
        out: list[str] = []
        oid: str | None = self.branches[branch]
        while oid is not None:
            out.append(oid)
            parents = self.commit(oid).parents
            oid = parents[0] if parents else None
        return out[::-1]


@dataclass(frozen=True)
class RequestRecord:
    """One request the server got. ``path`` is the raw request target (URL-encoded, query string included)."""

    method: str
    path: str
    has_auth: bool
    status: int


@dataclass
class _Fault:
    pattern: re.Pattern
    status: int
    method: str | None
    remaining: int
    error_code: str | None
    message: str


class HubError(Exception):
    """Raised inside a route: becomes an HTTP error answer with the Hub's ``X-Error-Code``/``X-Error-Message``."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict | None = None,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})  # more fields for the JSON body


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def _json(data: Any, status: int = 200, headers: dict | None = None) -> _Response:
    return _Response(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})})


# ---------------------------------------------------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------------------------------------------------


class FakeHubServer:
    """In-memory Hub served over HTTP on ``host`` (a free port by default) from a background thread.

    ``token``: when set, write endpoints need ``Authorization: Bearer <token>``, private repos need it to be read,
    and a request carrying any other token gets a 401 (like the Hub does for invalid tokens). ``None``: no auth.

    ``echo_authorization``: a misbehaving endpoint for redaction tests: every error answer repeats the request's
    ``Authorization`` header (in ``X-Error-Message`` and in the JSON body), as a careless proxy or server might.
    """

    def __init__(
        self,
        token: str | None = DEFAULT_TOKEN,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        username: str = DEFAULT_USERNAME,
        tree_page_size: int = 1000,
        lfs_threshold: int = LFS_SIZE_THRESHOLD,
        initial_gitattributes: bool = True,
        echo_authorization: bool = False,
    ):
        self.token = token
        self.echo_authorization = echo_authorization
        self.host = host
        self.port = port
        self.username = username
        self.tree_page_size = tree_page_size
        self.lfs_threshold = lfs_threshold
        self.initial_gitattributes = initial_gitattributes
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[RequestRecord] = []
        self.home: str | None = None  # set by `running_hub`
        self._faults: list[_Fault] = []
        self._upload_tickets: dict[str, tuple[str, str, int]] = {}  # nonce -> (repo key, oid, size)
        self._lock = threading.RLock()
        self._counter = itertools.count()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    def start(self) -> FakeHubServer:
        httpd = ThreadingHTTPServer((self.host, self.port), _Handler)
        httpd.daemon_threads = True
        httpd.hub = self  # type: ignore[attr-defined]
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeHubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    # -- test helpers -------------------------------------------------------------------------------------------------

    def fail_next(
        self,
        path_regex: str,
        status: int = 500,
        *,
        method: str | None = None,
        times: int = 1,
        error_code: str | None = None,
        message: str = "Injected failure",
    ) -> None:
        """Make the next ``times`` requests whose raw path matches ``path_regex`` (``re.search``) fail with ``status``.

        The request body is read and dropped: nothing of it is applied.
        """
        with self._lock:
            self._faults.append(
                _Fault(re.compile(path_regex), status, method.upper() if method else None, times, error_code, message)
            )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_matching(self, path_regex: str, method: str | None = None) -> list[RequestRecord]:
        pattern = re.compile(path_regex)
        return [
            r for r in list(self.requests) if pattern.search(r.path) and (method is None or r.method == method.upper())
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def paths_containing(self, secret: str) -> list[str]:
        """Logged request paths (raw or URL-decoded, query included) that contain ``secret``."""
        return [r.path for r in list(self.requests) if secret in r.path or secret in unquote(r.path)]

    def assert_secret_not_logged(self, secret: str) -> None:
        leaked = self.paths_containing(secret)
        assert not leaked, f"secret found in {len(leaked)} request path(s), e.g. {leaked[0]!r}"

    def create_repo(
        self, repo_id: str, *, repo_type: str = "model", private: bool = False, sdk: str | None = None
    ) -> FakeRepo:
        """Create a repo directly (no HTTP); like the Hub, it starts with an initial commit. A Space gets ``sdk``
        (``"static"`` by default)."""
        with self._lock:
            key = _repo_key(repo_id, repo_type)
            if key in self.repos:
                return self.repos[key]
            sdk = (sdk or "static") if repo_type == "space" else None
            repo = FakeRepo(repo_id=repo_id, repo_type=repo_type, private=private, sdk=sdk)
            files = {".gitattributes": DEFAULT_GITATTRIBUTES} if self.initial_gitattributes else {}
            commit = self._new_commit(repo, None, files, frozenset(), "initial commit", "")
            repo.branches["main"] = commit.oid
            self.repos[key] = repo
            return repo

    def add_files(
        self,
        repo_id: str,
        files: dict[str, bytes | str],
        *,
        repo_type: str = "model",
        private: bool = False,
        branch: str = "main",
        commit_message: str = "Add files",
        lfs: bool | None = None,
    ) -> str:
        """Seed a repo in memory (created if needed) with one commit adding ``files``; returns the commit oid.

        ``lfs=None`` stores files the way a push would (see :meth:`upload_mode`); ``True``/``False`` forces it.
        """
        with self._lock:
            repo = self.create_repo(repo_id, repo_type=repo_type, private=private)
            base = repo.commit(repo.branches[branch]) if branch in repo.branches else repo.head
            new_files = dict(base.files)
            lfs_paths = set(base.lfs_paths)
            for path, content in files.items():
                data = content.encode() if isinstance(content, str) else bytes(content)
                path = _check_path(path)
                new_files[path] = data
                is_lfs = (self.upload_mode(base, path, len(data), data[:512]) == "lfs") if lfs is None else lfs
                if is_lfs and data:
                    lfs_paths.add(path)
                    repo.lfs_objects[hashlib.sha256(data).hexdigest()] = data
                else:
                    lfs_paths.discard(path)
            commit = self._new_commit(repo, base.oid, new_files, frozenset(lfs_paths), commit_message, "")
            repo.branches[branch] = commit.oid
            return commit.oid

    def get_repo(self, repo_id: str, repo_type: str = "model") -> FakeRepo:
        return self.repos[_repo_key(repo_id, repo_type)]

    def history(self, repo_id: str, *, repo_type: str = "model", branch: str = "main") -> list[str]:
        """Commit oids of ``branch``, oldest first."""
        with self._lock:
            return self.get_repo(repo_id, repo_type).history(branch)

    def files(self, repo_id: str, *, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of a repo at a branch or full commit sha."""
        with self._lock:
            repo = self.get_repo(repo_id, repo_type)
            return dict(repo.commit(self._resolve(repo, revision)).files)

    def upload_mode(self, base: Commit | None, path: str, size: int, sample: bytes) -> str:
        """``"lfs"`` or ``"regular"``, decided like the Hub: LFS patterns of ``.gitattributes``, size, binary sample."""
        if path == ".gitattributes" or size == 0:
            return "regular"
        if size > self.lfs_threshold:
            return "lfs"
        attributes = base.files.get(".gitattributes") if base is not None else None
        patterns = _lfs_patterns(attributes) if attributes is not None else list(DEFAULT_LFS_PATTERNS)
        if any(_gitattributes_match(p, path) for p in patterns):
            return "lfs"
        return "lfs" if _looks_binary(sample) else "regular"

    # -- internals ----------------------------------------------------------------------------------------------------

    def _new_commit(
        self, repo: FakeRepo, parent: str | None, files: dict[str, bytes], lfs_paths: frozenset, title: str, msg: str
    ) -> Commit:
        digest = hashlib.sha1()
        digest.update(f"{repo.repo_type}/{repo.repo_id}\n{parent}\n{title}\n{next(self._counter)}\n{_now()}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{git_blob_sha1(files[path])}\n".encode())
        commit = Commit(
            oid=digest.hexdigest(),
            title=title,
            message=msg,
            parents=[parent] if parent else [],
            files=files,
            lfs_paths=lfs_paths,
            date=_now(),
        )
        repo.commits.append(commit)
        return commit

    def _resolve(self, repo: FakeRepo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if _SHA40.fullmatch(revision) and any(c.oid == revision for c in repo.commits):
            return revision
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.method is None or fault.method == method) and fault.pattern.search(path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)


def _repo_key(repo_id: str, repo_type: str) -> str:
    return f"{_URL_PREFIXES[repo_type]}{repo_id}"


def _check_path(path: str) -> str:
    path = path.replace("\\", "/")
    if path.startswith("./"):
        path = path[2:]
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return path


def _lfs_patterns(gitattributes: bytes) -> list[str]:
    out = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            out.append(parts[0])
    return out


def _gitattributes_match(pattern: str, path: str) -> bool:
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    return fnmatch.fnmatchcase(path, pattern.lstrip("/").replace("**/", "*"))


def _yaml_sdk(readme: bytes) -> str | None:
    """The ``sdk:`` of a README's YAML front matter (a top-level line), or None."""
    text = readme.decode("utf-8", "replace")
    if not text.startswith("---"):
        return None
    front = text[3:].split("\n---", 1)[0]
    match = re.search(r"^sdk:\s*['\"]?([A-Za-z]+)", front, re.M)
    return match.group(1) if match else None


def _looks_binary(sample: bytes) -> bool:
    if b"\0" in sample:
        return True
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(sample) - 3  # a multi-byte character cut by the 512-byte sample is fine
    return False


# ---------------------------------------------------------------------------------------------------------------------
# HTTP layer
# ---------------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        hub: FakeHubServer = self.server.hub  # type: ignore[attr-defined]
        body = self._read_body()
        has_auth = self.headers.get("Authorization") is not None
        try:
            fault = hub._take_fault(self.command, self.path)
            if fault is not None:
                raise HubError(fault.status, fault.message, fault.error_code)
            response = _Router(hub, self, body).dispatch()
        except HubError as e:
            headers = dict(e.headers)
            if e.error_code:
                headers["X-Error-Code"] = e.error_code
            message = e.message
            if hub.echo_authorization:
                message += f" (request sent Authorization: {self.headers.get('Authorization')})"
            headers["X-Error-Message"] = message
            response = _json({"error": message, **e.extra}, e.status, headers)
        except Exception as e:  # a bug in the fake: answer 500 with the traceback, keep serving
            traceback.print_exc(file=sys.stderr)
            response = _json({"error": f"fake hub crashed: {e!r}"}, 500, {"X-Error-Message": "fake hub crashed"})
        # Record before answering, so that the log is complete when the client call returns.
        hub._record(RequestRecord(self.command, self.path, has_auth, response.status))
        self.send_response(response.status)
        headers = {"Content-Length": str(len(response.body)), **response.headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and response.body:
            self.wfile.write(response.body)


class _Router:
    def __init__(self, hub: FakeHubServer, handler: _Handler, body: bytes):
        self.hub = hub
        self.method = handler.command
        self.headers = handler.headers
        self.body = body
        split = urlsplit(handler.path)
        self.raw_path = split.path
        self.query = parse_qs(split.query)
        self.segments = [unquote(s) for s in split.path.split("/")[1:]]
        auth = self.headers.get("Authorization")
        self.sent_token = auth.split(" ", 1)[1].strip() if auth and auth.startswith("Bearer ") else auth

    # -- auth ---------------------------------------------------------------------------------------------------------

    @property
    def authenticated(self) -> bool:
        return self.hub.token is None or self.sent_token == self.hub.token

    def _check_token_validity(self) -> None:
        if self.hub.token is not None and self.sent_token is not None and self.sent_token != self.hub.token:
            raise HubError(401, "Invalid credentials in Authorization header")

    def _require_write(self) -> None:
        if not self.authenticated:
            raise HubError(401, "You must be authenticated to access this resource")

    def _repo(self, repo_type: str, repo_id: str, *, write: bool = False) -> FakeRepo:
        if write:
            self._require_write()
        repo = self.hub.repos.get(_repo_key(repo_id, repo_type))
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and not self.authenticated:
            raise HubError(401, "Repository not found", "RepoNotFound")
        return repo

    # -- dispatch -----------------------------------------------------------------------------------------------------

    def dispatch(self) -> _Response:
        seg = self.segments
        if seg[:2] == ["_fake_lfs", "upload"] and len(seg) == 3:
            return self.lfs_upload(seg[2])  # presigned: no Authorization header, like S3
        if seg[:2] == ["api", "agent-harnesses"]:
            return _json({"standardEnvVars": [], "harnesses": {}})
        if seg[:2] == ["api", "telemetry"]:
            return _json({})
        self._check_token_validity()
        if seg and seg[0] == "api":
            return self.dispatch_api(seg[1:])
        for i, part in enumerate(seg[:3]):
            if part.endswith(".git") and seg[i + 1 : i + 4] == ["info", "lfs", "objects"] and len(seg) == i + 5:
                repo_type, repo_id = self._split_prefix(seg[:i] + [part[: -len(".git")]])
                if seg[i + 4] == "batch" and self.method == "POST":
                    return self.lfs_batch(repo_type, repo_id)
                if seg[i + 4] == "verify" and self.method == "POST":
                    return self.lfs_verify(repo_type, repo_id)
        for i in (2, 1, 3):
            if len(seg) > i + 1 and seg[i] == "resolve" and self.method in ("GET", "HEAD"):
                repo_type, repo_id = self._split_prefix(seg[:i])
                return self.resolve(repo_type, repo_id, seg[i + 1], "/".join(seg[i + 2 :]))
        raise HubError(404, f"Not found: {self.method} {self.raw_path}")

    def _split_prefix(self, parts: list[str]) -> tuple[str, str]:
        if len(parts) > 1 and parts[0] in ("datasets", "spaces"):
            return _REPO_TYPE_PLURALS[parts[0]], "/".join(parts[1:])
        return "model", "/".join(parts)

    def dispatch_api(self, seg: list[str]) -> _Response:
        m = self.method
        if seg == ["repos", "create"] and m == "POST":
            return self.create_repo()
        if seg == ["repos", "delete"] and m == "DELETE":
            return self.delete_repo()
        if seg == ["validate-yaml"] and m == "POST":
            return _json({"errors": [], "warnings": []})
        if seg == ["whoami-v2"] and m == "GET":
            return self.whoami()
        if len(seg) >= 2 and seg[0] in _REPO_TYPE_PLURALS:
            repo_type = _REPO_TYPE_PLURALS[seg[0]]
            repo_id, rest = self._split_repo_id(repo_type, seg[1:])
            if not rest and m == "GET":
                return self.repo_info(repo_type, repo_id, "main")
            if len(rest) == 2 and rest[0] == "revision" and m == "GET":
                return self.repo_info(repo_type, repo_id, rest[1])
            if len(rest) >= 2 and rest[0] == "tree" and m == "GET":
                return self.tree(repo_type, repo_id, rest[1], "/".join(rest[2:]))
            if len(rest) == 2 and rest[0] == "preupload" and m == "POST":
                return self.preupload(repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "commit" and m == "POST":
                return self.commit(repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "paths-info" and m == "POST":
                return self.paths_info(repo_type, repo_id, rest[1])
            if rest == ["refs"] and m == "GET":
                return self.refs(repo_type, repo_id)
            if len(rest) == 2 and rest[0] == "commits" and m == "GET":
                return self.list_commits(repo_type, repo_id, rest[1])
            if len(rest) == 2 and rest[0] == "branch" and m == "POST":
                return self.create_branch(repo_type, repo_id, rest[1])
        raise HubError(404, f"Not found: {self.method} {self.raw_path}")

    def _split_repo_id(self, repo_type: str, parts: list[str]) -> tuple[str, list[str]]:
        """``ns/name/rest...`` or, for a legacy single-segment repo that exists, ``name/rest...``."""
        if len(parts) >= 2 and _repo_key("/".join(parts[:2]), repo_type) in self.hub.repos:
            return "/".join(parts[:2]), parts[2:]
        if _repo_key(parts[0], repo_type) in self.hub.repos or len(parts) == 1:
            return parts[0], parts[1:]
        return "/".join(parts[:2]), parts[2:]

    def _json_body(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError as e:
            raise HubError(400, f"Invalid JSON body: {e}") from e

    # -- repos --------------------------------------------------------------------------------------------------------

    def whoami(self) -> _Response:
        if self.sent_token is None and self.hub.token is not None:
            raise HubError(401, "Invalid credentials in Authorization header")
        name = self.hub.username
        return _json({"type": "user", "name": name, "fullname": name, "orgs": [], "auth": {"type": "access_token"}})

    def create_repo(self) -> _Response:
        self._require_write()
        payload = self._json_body()
        name = payload.get("name")
        if not name:
            raise HubError(400, "Missing repo name")
        repo_id = f"{payload.get('organization') or self.hub.username}/{name}"
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIXES:
            raise HubError(400, f"Invalid repo type: {repo_type}")
        private = payload.get("visibility", "private" if payload.get("private") else "public") != "public"
        url = f"{self.hub.endpoint}/{_URL_PREFIXES[repo_type]}{repo_id}"
        sdk = payload.get("sdk")
        with self.hub._lock:
            if _repo_key(repo_id, repo_type) in self.hub.repos:
                raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
            if repo_type == "space" and sdk not in SPACE_SDKS:
                raise HubError(400, f"Invalid sdk {sdk!r}: a Space needs one of {', '.join(SPACE_SDKS)}")
            self.hub.create_repo(repo_id, repo_type=repo_type, private=private, sdk=sdk)
        return _json({"url": url, "name": repo_id, "id": hashlib.sha1(url.encode()).hexdigest()[:24]})

    def delete_repo(self) -> _Response:
        self._require_write()
        payload = self._json_body()
        repo_id = f"{payload.get('organization') or self.hub.username}/{payload.get('name')}"
        key = _repo_key(repo_id, payload.get("type") or "model")
        with self.hub._lock:
            if key not in self.hub.repos:
                raise HubError(404, "Repository not found", "RepoNotFound")
            del self.hub.repos[key]
        return _json({})

    def repo_info(self, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commit(self.hub._resolve(repo, revision))
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = commit.file_entry(path)
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if "lfs" in entry:
                    lfs = entry["lfs"]
                    sibling["lfs"] = {"size": lfs["size"], "sha256": lfs["oid"], "pointerSize": lfs["pointerSize"]}
            siblings.append(sibling)
        author = repo.repo_id.split("/")[0] if "/" in repo.repo_id else None
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": author,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(len(d) for d in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo.repo_id
        if repo_type == "space":
            info["sdk"] = repo.sdk
        return _json(info)

    def refs(self, repo_type: str, repo_id: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            branches = dict(repo.branches)

        def ref(name: str, oid: str) -> dict:
            return {
                "name": name,
                "ref": name if name.startswith("refs/") else f"refs/heads/{name}",
                "targetCommit": oid,
            }

        return _json(
            {
                "branches": [ref(n, o) for n, o in branches.items() if not n.startswith("refs/pr/")],
                "converts": [],
                "tags": [],
                "pullRequests": [ref(n, o) for n, o in branches.items() if n.startswith("refs/pr/")],
            }
        )

    def list_commits(self, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            oid: str | None = self.hub._resolve(repo, revision)
            out = []
            while oid is not None:
                c = repo.commit(oid)
                out.append({"id": c.oid, "title": c.title, "message": c.message, "authors": [], "date": c.date})
                oid = c.parents[0] if c.parents else None
        return _json(out)

    def create_branch(self, repo_type: str, repo_id: str, branch: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id, write=True)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = self._json_body().get("startingPoint") or "main"
            repo.branches[branch] = self.hub._resolve(repo, start)
        return _json({})

    # -- reading files ------------------------------------------------------------------------------------------------

    def tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commit(self.hub._resolve(repo, revision))
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        path = path.strip("/")
        folders = commit.folders()
        if path and path not in folders:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        prefix = f"{path}/" if path else ""

        def wanted(p: str) -> bool:
            return p.startswith(prefix) and (recursive or "/" not in p[len(prefix) :])

        entries = [commit.folder_entry(p) for p in folders if wanted(p)]
        entries += [commit.file_entry(p) for p in commit.files if wanted(p)]
        entries.sort(key=lambda e: e["path"])
        try:
            start = int(self.query.get("cursor", ["0"])[0])
        except ValueError as e:
            raise HubError(400, "Invalid cursor") from e
        size = max(1, self.hub.tree_page_size)
        headers = {"X-Repo-Commit": commit.oid}
        if start + size < len(entries):
            params = {k: v[0] for k, v in self.query.items()}
            params["cursor"] = str(start + size)
            headers["Link"] = f'<{self.hub.endpoint}{self.raw_path}?{urlencode(params)}>; rel="next"'
        return _json(entries[start : start + size], headers=headers)

    def paths_info(self, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commit(self.hub._resolve(repo, revision))
        if "json" in self.headers.get("Content-Type", ""):
            paths = self._json_body().get("paths", [])
        else:
            paths = parse_qs(self.body.decode()).get("paths", [])
        folders = commit.folders()
        out = []
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(commit.file_entry(p))
            elif p in folders:
                out.append(commit.folder_entry(p))
        return _json(out)

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id)
            commit = repo.commit(self.hub._resolve(repo, revision))
        if path not in commit.files:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        data = commit.files[path]
        etag = commit.etag(path)
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream" if _looks_binary(data[:512]) else "text/plain; charset=utf-8",
        }
        if path in commit.lfs_paths:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                first = int(match.group(1))
                last = int(match.group(2)) if match.group(2) else len(data) - 1
            else:
                first, last = max(0, len(data) - int(match.group(2))), len(data) - 1
            last = min(last, len(data) - 1)
            if first >= len(data) or first > last:
                raise HubError(
                    416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{len(data)}"}
                )
            headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
            data = data[first : last + 1]
            status = 206
        return _Response(status, data, headers)

    # -- writing ------------------------------------------------------------------------------------------------------

    def preupload(self, repo_type: str, repo_id: str, revision: str) -> _Response:
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id, write=True)
            base = repo.commit(self.hub._resolve(repo, revision))
        files = []
        for item in self._json_body().get("files", []):
            path = _check_path(item["path"])
            sample = base64.b64decode(item.get("sample", ""))
            mode = self.hub.upload_mode(base, path, int(item.get("size", 0)), sample)
            entry: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            if path in base.files:
                data = base.files[path]
                entry["oid"] = hashlib.sha256(data).hexdigest() if mode == "lfs" else git_blob_sha1(data)
            files.append(entry)
        return _json({"files": files, "commitOid": base.oid})

    def lfs_batch(self, repo_type: str, repo_id: str) -> _Response:
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported by the fake hub")
        key = _repo_key(repo_id, repo_type)
        prefix = _URL_PREFIXES[repo_type]
        objects = []
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id, write=True)
            for obj in payload.get("objects", []):
                oid, size = str(obj.get("oid")), int(obj.get("size", 0))
                if not re.fullmatch(r"[0-9a-f]{64}", oid):
                    objects.append({"oid": oid, "size": size, "error": {"code": 422, "message": "Invalid oid"}})
                    continue
                if oid in repo.lfs_objects:
                    objects.append({"oid": oid, "size": size})  # already there: no action, the client skips it
                    continue
                nonce = secrets.token_urlsafe(16)
                self.hub._upload_tickets[nonce] = (key, oid, size)
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {
                            "upload": {"href": f"{self.hub.endpoint}/_fake_lfs/upload/{nonce}"},
                            "verify": {"href": f"{self.hub.endpoint}/{prefix}{repo_id}.git/info/lfs/objects/verify"},
                        },
                    }
                )
        return _json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            headers={"Content-Type": "application/vnd.git-lfs+json"},
        )

    def lfs_upload(self, nonce: str) -> _Response:
        if self.method != "PUT":
            raise HubError(405, "Method not allowed")
        with self.hub._lock:
            ticket = self.hub._upload_tickets.get(nonce)
            if ticket is None:
                raise HubError(403, "Invalid or expired upload URL")
            key, oid, size = ticket
            if hashlib.sha256(self.body).hexdigest() != oid or len(self.body) != size:
                raise HubError(400, "Uploaded content does not match the announced sha256/size")
            repo = self.hub.repos.get(key)
            if repo is None:
                raise HubError(404, "Repository not found", "RepoNotFound")
            repo.lfs_objects[oid] = self.body
            del self.hub._upload_tickets[nonce]
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(self.body).hexdigest()}"'})

    def lfs_verify(self, repo_type: str, repo_id: str) -> _Response:
        payload = self._json_body()
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id, write=True)
            data = repo.lfs_objects.get(str(payload.get("oid")))
        if data is None or ("size" in payload and len(data) != int(payload["size"])):
            raise HubError(404, "LFS object not found")
        return _json({"success": True})

    def commit(self, repo_type: str, repo_id: str, revision: str) -> _Response:
        create_pr = self.query.get("create_pr", ["0"])[0] in ("1", "true")
        try:
            items = [json.loads(line) for line in self.body.decode("utf-8").splitlines() if line.strip()]
        except ValueError as e:
            raise HubError(400, f"Invalid NDJSON body: {e}") from e
        if not items or items[0].get("key") != "header":
            raise HubError(400, "The first line of the commit payload must be the header")
        header = items[0].get("value") or {}
        title = header.get("summary") or "Commit"
        with self.hub._lock:
            repo = self._repo(repo_type, repo_id, write=True)
            if not create_pr and revision not in repo.branches:
                self.hub._resolve(repo, revision)  # raises RevisionNotFound for unknown revisions
                raise HubError(400, f"Invalid revision {revision!r}: can only commit to a branch")
            base_oid = self.hub._resolve(repo, revision)
            parent_commit = header.get("parentCommit")
            if parent_commit and not base_oid.startswith(parent_commit):
                raise HubError(412, f"A commit has happened since. Parent commit {parent_commit} is not the head")
            base = repo.commit(base_oid)
            files = dict(base.files)
            lfs_paths = set(base.lfs_paths)
            # Work on copies only: the repo is touched below, once every operation has been validated.
            for item in items[1:]:
                key, value = item.get("key"), item.get("value") or {}
                path = _check_path(
                    str(value.get("path", "")).rstrip("/") if key == "deletedFolder" else str(value.get("path", ""))
                )
                if key == "file":
                    content = value.get("content", "")
                    try:
                        data = (
                            base64.b64decode(content, validate=True)
                            if value.get("encoding") == "base64"
                            else content.encode()
                        )
                    except ValueError as e:
                        raise HubError(400, f"Invalid base64 content for {path}") from e
                    files[path] = data
                    lfs_paths.discard(path)
                elif key == "lfsFile":
                    oid = str(value.get("oid"))
                    data = repo.lfs_objects.get(oid)
                    if data is None:
                        raise HubError(
                            400, f"Your push was rejected because an LFS pointer ({path}) points to a missing object"
                        )
                    if "size" in value and int(value["size"]) != len(data):
                        raise HubError(400, f"LFS pointer size mismatch for {path}")
                    files[path] = data
                    lfs_paths.add(path)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                    lfs_paths.discard(path)
                elif key == "deletedFolder":
                    inside = [p for p in files if p.startswith(path + "/")]
                    if not inside:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in inside:
                        del files[p]
                        lfs_paths.discard(p)
                else:
                    raise HubError(400, f"Unknown commit operation: {key!r}")
            commit = self.hub._new_commit(
                repo, base_oid, files, frozenset(lfs_paths), title, header.get("description") or ""
            )
            pr_url = None
            if create_pr:
                number = repo.next_pr
                repo.next_pr += 1
                repo.branches[f"refs/pr/{number}"] = commit.oid
                pr_url = f"{self.hub.endpoint}/{_URL_PREFIXES[repo_type]}{repo_id}/discussions/{number}"
            else:
                repo.branches[revision] = commit.oid
                if repo_type == "space" and revision == "main" and "README.md" in files:
                    repo.sdk = _yaml_sdk(files["README.md"]) or repo.sdk
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self.hub.endpoint}/{_URL_PREFIXES[repo_type]}{repo_id}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )


# ---------------------------------------------------------------------------------------------------------------------
# Pointing huggingface_hub (and the libraries that copied its settings) at the fake server
# ---------------------------------------------------------------------------------------------------------------------

_MISSING = object()


class _Patcher:
    """Sets attributes / environment variables and puts the old values back, in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []
        self._env: dict[str, str | None] = {}

    def setattr(self, obj: Any, name: str, value: Any) -> None:
        self._undo.append((obj, name, getattr(obj, name, _MISSING)))
        setattr(obj, name, value)

    def module_attr(self, module_name: str, name: str, value: Any) -> None:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, name):
            self.setattr(module, name, value)

    def setenv(self, name: str, value: str | None) -> None:
        if name not in self._env:
            self._env[name] = os.environ.get(name)
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value

    def restore(self) -> None:
        for obj, name, old in reversed(self._undo):
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, name)
            else:
                setattr(obj, name, old)
        self._undo.clear()
        for name, old in self._env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old
        self._env.clear()


def _reset_clients() -> None:
    """Drop pooled connections and cached clients that may point at another endpoint."""
    from huggingface_hub.utils import close_session

    close_session()
    hffs = sys.modules.get("huggingface_hub.hf_file_system")
    if hffs is not None:
        with contextlib.suppress(Exception):
            hffs.HfFileSystem.clear_instance_cache()


def _point_hub_at(patcher: _Patcher, endpoint: str, home: str, token_env: str | None) -> list[tuple[str, str, Any]]:
    """Patch environment and module constants; return fixes to apply on exit to modules not loaded yet."""
    import huggingface_hub.constants as C
    import huggingface_hub.hf_api
    import huggingface_hub.utils._http as hf_http

    old_endpoint, old_offline = C.ENDPOINT, C.HF_HUB_OFFLINE
    cache = os.path.join(home, "hub")
    assets = os.path.join(home, "assets")
    xet = os.path.join(home, "xet")
    token_path = os.path.join(home, "token")

    # 1. Environment (read by libraries imported from now on, and by subprocesses).
    env = {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HOME": home,
        "HF_HUB_CACHE": cache,
        "HUGGINGFACE_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": assets,
        "HF_XET_CACHE": xet,
        "HF_TOKEN_PATH": token_path,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_TOKEN": token_env,
        "HUGGING_FACE_HUB_TOKEN": None,
        "HF_OIDC_RESOURCE": None,
        "HUGGINGFACE_CO_STAGING": None,
    }
    for name, value in env.items():
        patcher.setenv(name, value)
    for name in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(name)
        patcher.setenv(name, f"{current},127.0.0.1,localhost" if current else "127.0.0.1,localhost")

    # 2. huggingface_hub.constants: read once at import time.
    host = urlsplit(endpoint).hostname or "127.0.0.1"
    constants = {
        "ENDPOINT": endpoint,
        "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_URL_HOSTS": frozenset(C.HF_URL_HOSTS | {host}),
        "HF_HUB_OFFLINE": False,
        "HF_HUB_DISABLE_XET": True,
        "HF_HUB_DISABLE_TELEMETRY": True,
        "HF_HUB_DISABLE_UPDATE_CHECK": True,
        "HF_HOME": home,
        "default_cache_path": cache,
        "default_assets_cache_path": assets,
        "default_xet_cache_path": xet,
        "HUGGINGFACE_HUB_CACHE": cache,
        "HUGGINGFACE_ASSETS_CACHE": assets,
        "HF_HUB_CACHE": cache,
        "HF_ASSETS_CACHE": assets,
        "HF_XET_CACHE": xet,
        "HF_TOKEN_PATH": token_path,
        "HF_STORED_TOKENS_PATH": os.path.join(home, "stored_tokens"),
        "CHECK_FOR_UPDATE_DONE_PATH": os.path.join(home, ".check_for_update_done"),
        "CHECK_FOR_SKILL_UPDATE_DONE_PATH": os.path.join(home, ".check_for_skill_update_done"),
        "AGENT_HARNESSES_PATH": os.path.join(home, ".agent_harnesses.json"),
    }
    for name, value in constants.items():
        if hasattr(C, name):
            patcher.setattr(C, name, value)

    # 3. Copies made at import time by other modules.
    patcher.setattr(hf_http, "_HUB_ORIGINS", frozenset(hf_http._HUB_ORIGINS | {hf_http._url_origin(endpoint)}))
    patcher.setattr(huggingface_hub.hf_api.api, "endpoint", endpoint)  # module-level `HfApi()` behind `hf.create_repo`
    for module_name in ("huggingface_hub.utils._git_credential", "huggingface_hub.cli.auth"):
        patcher.module_attr(module_name, "ENDPOINT", endpoint)
    patcher.module_attr("huggingface_hub.utils._cache_manager", "HF_HUB_CACHE", cache)
    patcher.module_attr("huggingface_hub.utils._cache_assets", "HF_ASSETS_CACHE", assets)
    # transformers caches one HfApi (built with the endpoint of the time) and a modules cache under HF_HOME.
    patcher.module_attr("transformers.utils.hub", "_hf_api", None)
    patcher.module_attr("transformers.utils.hub", "HF_MODULES_CACHE", os.path.join(home, "modules"))
    patcher.module_attr("transformers.utils", "HF_MODULES_CACHE", os.path.join(home, "modules"))
    # datasets copies the endpoint and offline flag into `datasets.config`.
    patcher.module_attr("datasets.config", "HF_ENDPOINT", endpoint)
    patcher.module_attr(
        "datasets.config", "HUB_DATASETS_URL", endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
    )
    patcher.module_attr("datasets.config", "HF_HUB_OFFLINE", False)
    patcher.module_attr("datasets.config", "HF_DATASETS_OFFLINE", False)

    # Modules first imported inside the context copy the fake endpoint: point them back on exit.
    late_fixes = [
        ("transformers.utils.hub", "_hf_api", None),
        ("datasets.config", "HF_ENDPOINT", old_endpoint),
        ("datasets.config", "HUB_DATASETS_URL", old_endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"),
        ("datasets.config", "HF_HUB_OFFLINE", old_offline),
        ("datasets.config", "HF_DATASETS_OFFLINE", old_offline),
    ]
    return [(m, a, v) for m, a, v in late_fixes if m not in sys.modules]


@contextlib.contextmanager
def running_hub(
    token: str | None = DEFAULT_TOKEN, *, set_token_env: bool = False, **server_kwargs: Any
) -> Iterator[FakeHubServer]:
    """Run a :class:`FakeHubServer` and point ``huggingface_hub`` at it, with a fresh ``HF_HOME`` temp dir.

    Sets ``HF_ENDPOINT``, ``HF_HUB_DISABLE_XET=1``, ``HF_HUB_OFFLINE=0``, ``HF_HOME``/``HF_HUB_CACHE`` (and the
    matching ``huggingface_hub.constants``, plus copies in ``huggingface_hub``/``transformers``/``datasets``), unsets
    ``HF_TOKEN`` (or sets it to ``token`` with ``set_token_env=True``), and restores all of it on exit.
    """
    home = tempfile.mkdtemp(prefix="fake-hf-home-")
    server = FakeHubServer(token=token, **server_kwargs)
    server.home = home
    patcher = _Patcher()
    late_fixes: list[tuple[str, str, Any]] = []
    server.start()
    try:
        late_fixes = _point_hub_at(patcher, server.endpoint, home, token if set_token_env else None)
        _reset_clients()
        yield server
    finally:
        patcher.restore()
        for module_name, name, value in late_fixes:
            module = sys.modules.get(module_name)
            if module is not None and hasattr(module, name):
                setattr(module, name, value)
        with contextlib.suppress(Exception):
            _reset_clients()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


__all__ = [
    "DEFAULT_TOKEN",
    "Commit",
    "FakeHubServer",
    "FakeRepo",
    "HubError",
    "RequestRecord",
    "git_blob_sha1",
    "lfs_pointer",
    "running_hub",
]
