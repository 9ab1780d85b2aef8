"""A small synchronous client of sandboxd's HTTP API (api/openapi.json), standard
library only.

    c = Client("http://127.0.0.1:8080", token)
    session, result = c.create(chat_id)                  # get-or-create
    res = c.exec(chat_id, ["sh", "-c", "echo hi"])        # res.stdout == "hi\\n"
    for ev in c.exec_stream(chat_id, ["sh", "-c", "..."]):  # output as it comes
        ...

Errors the server answers with are raised as sandboxd.errors classes (NotFound,
Expired, ...). A Client holds no connection between calls and is safe to share
between threads.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.parse
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .errors import SandboxdError, error_for, problem

#: Each operation of api/openapi.json and the Client method that calls it. The MCP
#: endpoint (/mcp/chats/{chat_id}) is not part of this REST surface: MCP clients speak
#: to it directly; operations under /mcp/ are left out of the mapping (and its test).
OPERATIONS: Dict[str, str] = {
    "put-sandbox": "create",
    "get-sandbox": "get",
    "delete-sandbox": "delete",
    "delete-workspace": "delete_workspace",
    "list-sandboxes": "list",
    "exec-sandbox": "exec",  # and exec_stream (Accept: application/x-ndjson)
    "put-file": "upload",
    "get-file": "download",  # and download_to
    "list-files": "list_files",
    "keepalive-sandbox": "keepalive",
    "list-egress-denials": "egress_denials",
    "healthz": "healthz",
    "readyz": "readyz",
    "metrics": "metrics",
}

_MAX_JSON = 16 << 20  # bytes of a JSON answer read at most
_MAX_LINE = 4 << 20  # bytes of one NDJSON event read at most
_CHUNK = 64 << 10

_FRACTION = re.compile(r"\.(\d+)")


def _time(value: str) -> datetime:
    """Parses an RFC 3339 time as Go writes it (Z, up to 9 fraction digits)."""
    value = value.replace("Z", "+00:00").replace("z", "+00:00")
    value = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class Session:
    """A chat's sandbox."""

    session_id: str
    chat_id: str
    container_id: str
    status: str
    created_at: datetime
    expires_at: datetime
    agent_id: str
    volume_host_path: str
    expired: bool

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "Session":
        return cls(
            session_id=d["session_id"],
            chat_id=d["chat_id"],
            container_id=d["container_id"],
            status=d["status"],
            created_at=_time(d["created_at"]),
            expires_at=_time(d["expires_at"]),
            agent_id=d.get("agent_id", ""),
            volume_host_path=d.get("volume_host_path", ""),
            expired=bool(d.get("expired", False)),
        )


@dataclass(frozen=True)
class DeleteResult:
    """What a delete did: result "deleted" or "not_found" (ids then empty)."""

    chat_id: str
    result: str
    session_id: str
    container_id: str


@dataclass(frozen=True)
class WorkspaceDeleteResult:
    """What a workspace delete did: result "removed" or "not_found"; path is the chat's
    workspace folder on the host."""

    chat_id: str
    result: str
    path: str


@dataclass(frozen=True)
class Denial:
    """A connection the egress proxy refused to a sandbox: destination is host:port as the
    sandbox asked for it; reason is denied, not_allowed, internal, unresolved, bad_request
    or sni_mismatch; detail names the rule or address that decided."""

    time: datetime
    destination: str
    reason: str
    detail: str


@dataclass(frozen=True)
class Page:
    """One page of list(); next is the cursor for after=, empty on the last page."""

    items: List[Session]
    next: str


@dataclass(frozen=True)
class ExecResult:
    """How a command ended. exit_code is -1 when it was killed for its timeout."""

    exit_code: int
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration_ms: int


@dataclass(frozen=True)
class ExecEvent:
    """One event of a streamed exec: type "stdout"/"stderr" with data, or the last one,
    "exit" with exit_code, timed_out, truncated, duration_ms. (An "error" event is
    raised, not yielded.)"""

    type: str
    data: str = ""
    exit_code: int = 0
    timed_out: bool = False
    truncated: bool = False
    duration_ms: int = 0


@dataclass(frozen=True)
class FileInfo:
    """One entry of a workspace; path is relative to the workspace."""

    path: str
    size: int
    mode: str
    mod_time: datetime
    is_dir: bool

    @classmethod
    def _from(cls, d: Mapping[str, Any]) -> "FileInfo":
        return cls(d["path"], int(d["size"]), d["mode"], _time(d["mod_time"]), bool(d["is_dir"]))


Body = Union[bytes, bytearray, IO[bytes]]


class Client:
    """A client of one sandboxd at base_url (http or https), sending token as a bearer
    token when given. timeout is the socket timeout in seconds of each read: a buffered
    exec must end within it, so keep it above the commands' timeouts."""

    def __init__(self, base_url: str, token: Optional[str] = None, timeout: float = 300.0) -> None:
        u = urllib.parse.urlsplit(base_url.rstrip("/"))
        if u.scheme not in ("http", "https") or not u.netloc:
            raise ValueError(f"sandboxd: server URL {base_url!r} is not an http(s) URL")
        self._scheme, self._netloc, self._prefix = u.scheme, u.netloc, u.path
        self._token = token
        self._timeout = timeout

    # -- sandboxes

    def create(self, chat_id: str, agent_id: str = "", volume_host_path: str = "") -> Tuple[Session, str]:
        """Returns the chat's live sandbox, made when there is none or it expired, and
        which of "created", "reused", "replaced" happened. Raises Conflict when the live
        sandbox is another agent's or folder's, Invalid for a bad chat id or body."""
        body: Dict[str, str] = {}
        if agent_id:
            body["agent_id"] = agent_id
        if volume_host_path:
            body["volume_host_path"] = volume_host_path
        d = self._json("PUT", _sandbox(chat_id), body=body)
        return Session._from(d), d["result"]

    def get(self, chat_id: str) -> Session:
        """Returns the chat's sandbox, expired or not. Raises NotFound when it has none."""
        return Session._from(self._json("GET", _sandbox(chat_id)))

    def delete(self, chat_id: str) -> DeleteResult:
        """Removes the chat's sandbox; a chat with none gives result "not_found"."""
        d = self._json("DELETE", _sandbox(chat_id))
        return DeleteResult(d["chat_id"], d["result"], d.get("session_id", ""), d.get("container_id", ""))

    def delete_workspace(self, chat_id: str) -> WorkspaceDeleteResult:
        """Removes the workspace folder sandboxd made for the chat and everything in it; a
        chat without one gives result "not_found". Raises Conflict while the chat has a
        sandbox (expired or not): delete that first."""
        d = self._json("DELETE", "/v1/chats/" + urllib.parse.quote(chat_id, safe="") + "/workspace")
        return WorkspaceDeleteResult(d["chat_id"], d["result"], d.get("path", ""))

    def list(
        self,
        agent_id: Optional[str] = None,
        expired: Optional[bool] = None,
        after: Optional[str] = None,
        limit: Optional[int] = None,
    ) -> Page:
        """Returns one page of sandboxes, ordered by chat id."""
        q: Dict[str, str] = {}
        if agent_id:
            q["agent_id"] = agent_id
        if expired is not None:
            q["expired"] = "true" if expired else "false"
        if after:
            q["after"] = after
        if limit is not None:
            q["limit"] = str(limit)
        d = self._json("GET", "/v1/sandboxes", query=q)
        return Page([Session._from(s) for s in d.get("items") or []], d.get("next", ""))

    def keepalive(self, chat_id: str, ttl_s: int) -> Session:
        """Sets the live sandbox to expire ttl_s seconds from now (capped by the server's
        maximum lifetime). Raises Expired for an expired one: it is not revived."""
        return Session._from(self._json("POST", _sandbox(chat_id) + "/keepalive", body={"ttl_s": int(ttl_s)}))

    def egress_denials(self, chat_id: str) -> List[Denial]:
        """The connections the egress proxy refused to the chat's current sandbox, newest
        first (at most 100): why a download failed. Raises NotFound without a sandbox."""
        d = self._json("GET", _sandbox(chat_id) + "/egress")
        return [
            Denial(time=_time(x["time"]), destination=x["destination"], reason=x["reason"], detail=x.get("detail", ""))
            for x in d.get("denials") or []
        ]

    # -- exec

    def exec(
        self,
        chat_id: str,
        cmd: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        workdir: str = "",
        stdin: str = "",
        timeout_s: int = 0,
    ) -> ExecResult:
        """Runs cmd (an argv) in the chat's live sandbox and returns once it ends. A
        timeout is no error: timed_out says so. Raises NotFound / Expired without a live
        sandbox, Busy when it runs as many commands as it may."""
        d = self._json("POST", _sandbox(chat_id) + "/exec", body=_exec_body(cmd, env, workdir, stdin, timeout_s))
        return ExecResult(
            int(d["exit_code"]), d["stdout"], d["stderr"], bool(d["timed_out"]),
            bool(d["truncated"]), int(d["duration_ms"]),
        )

    def exec_stream(
        self,
        chat_id: str,
        cmd: Sequence[str],
        env: Optional[Mapping[str, str]] = None,
        workdir: str = "",
        stdin: str = "",
        timeout_s: int = 0,
    ) -> Iterator[ExecEvent]:
        """Runs cmd like exec and yields its output as it comes (NDJSON): "stdout" and
        "stderr" events, then one "exit". A failure after the output began is raised as
        the SandboxdError of its code; a stream that ends before "exit" raises
        SandboxdError (code "internal"). Closing the iterator early drops the connection."""
        body = json.dumps(_exec_body(cmd, env, workdir, stdin, timeout_s)).encode()
        conn, resp = self._send("POST", _sandbox(chat_id) + "/exec", None, body,
                                "application/json", "application/x-ndjson")
        return self._events(conn, resp)

    def _events(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Iterator[ExecEvent]:
        try:
            media = (resp.getheader("Content-Type") or "").split(";", 1)[0].strip()
            if media != "application/x-ndjson":
                raise SandboxdError(resp.status, "internal", "not a stream", f"the server answered {media!r}")
            while True:
                line = resp.readline(_MAX_LINE + 1)
                if not line:
                    raise SandboxdError(502, "internal", "stream cut", "the stream ended before the command did")
                if len(line) > _MAX_LINE:
                    raise SandboxdError(502, "internal", "event too large", f"an event is over {_MAX_LINE} bytes")
                if not line.strip():
                    continue
                ev = json.loads(line)
                kind = ev.get("type")
                if kind in ("stdout", "stderr"):
                    yield ExecEvent(kind, data=ev.get("data", ""))
                elif kind == "exit":
                    yield ExecEvent(
                        "exit", exit_code=int(ev.get("exit_code", 0)), timed_out=bool(ev.get("timed_out")),
                        truncated=bool(ev.get("truncated")), duration_ms=int(ev.get("duration_ms", 0)),
                    )
                    return
                elif kind == "error":
                    raise error_for(int(ev.get("status") or 500), ev.get("code"), "", ev.get("detail", ""))
                # Unknown event types are for newer clients.
        finally:
            resp.close()
            conn.close()

    # -- files

    def upload(self, chat_id: str, path: str, content: Body) -> FileInfo:
        """Writes content (bytes, or a binary file object, streamed) to path in the
        workspace, replacing the file whole. Raises TooLarge over the server's limit,
        Invalid for a path outside the workspace."""
        conn, resp = self._send("PUT", _sandbox(chat_id) + "/files", {"path": path}, content,
                                "application/octet-stream", "application/json")
        return FileInfo._from(_read_json(conn, resp))

    def download(self, chat_id: str, path: str) -> bytes:
        """Returns the content of the workspace's file path. Raises NotFound when it
        does not exist, Invalid for a folder or a path outside the workspace."""
        conn, resp = self._send("GET", _sandbox(chat_id) + "/files", {"path": path}, None, "", "application/octet-stream")
        try:
            return resp.read()
        finally:
            conn.close()

    def download_to(self, chat_id: str, path: str, out: IO[bytes]) -> int:
        """Writes the workspace's file path to out as it comes; returns the bytes written."""
        conn, resp = self._send("GET", _sandbox(chat_id) + "/files", {"path": path}, None, "", "application/octet-stream")
        n = 0
        try:
            while True:
                chunk = resp.read(_CHUNK)
                if not chunk:
                    return n
                out.write(chunk)
                n += len(chunk)
        finally:
            conn.close()

    def list_files(self, chat_id: str, path: str = "") -> List[FileInfo]:
        """Lists the folder path of the workspace ("" for the workspace itself)."""
        d = self._json("GET", _sandbox(chat_id) + "/files/list", query={"path": path} if path else None)
        return [FileInfo._from(f) for f in d.get("items") or []]

    # -- operations

    def healthz(self) -> str:
        """The liveness probe's status ("ok")."""
        return self._json("GET", "/healthz")["status"]

    def readyz(self) -> str:
        """The readiness probe's status ("ready"); raises SandboxdError (503) when not ready."""
        conn, resp = self._send("GET", "/readyz", None, None, "", "application/json")
        data = _read(conn, resp)
        try:
            return json.loads(data)["status"]
        except (ValueError, KeyError, TypeError):
            return data.decode("utf-8", "replace").strip()

    def metrics(self) -> str:
        """The Prometheus text of /metrics."""
        conn, resp = self._send("GET", "/metrics", None, None, "", "text/plain")
        return _read(conn, resp).decode("utf-8", "replace")

    # -- transport

    def _json(self, method: str, path: str, query: Optional[Mapping[str, str]] = None, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        conn, resp = self._send(method, path, query, data, "application/json" if data is not None else "",
                                "application/json")
        return _read_json(conn, resp)

    def _send(
        self,
        method: str,
        path: str,
        query: Optional[Mapping[str, str]],
        body: Optional[Body],
        content_type: str,
        accept: str,
    ) -> Tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Sends one request on a new connection and returns a 2xx answer (the caller
        closes the connection); any other answer is raised as its SandboxdError."""
        target = self._prefix + path
        if query:
            target += "?" + urllib.parse.urlencode(query)
        headers = {"Accept": accept, "User-Agent": "sandboxd-python/0.1"}
        if content_type:
            headers["Content-Type"] = content_type
        if self._token:
            headers["Authorization"] = "Bearer " + self._token
        if isinstance(body, (bytes, bytearray)):
            headers["Content-Length"] = str(len(body))
        elif body is None and method in ("PUT", "POST"):
            headers["Content-Length"] = "0"
        conn_cls = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._netloc, timeout=self._timeout)
        try:
            # A file object without a Content-Length goes chunked, streamed.
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
        except BaseException:
            conn.close()
            raise
        if 200 <= resp.status < 300:
            return conn, resp
        try:
            data = resp.read(64 << 10)
        finally:
            conn.close()
        raise problem(resp.status, resp.reason, resp.getheader("Content-Type") or "", data)


def _sandbox(chat_id: str) -> str:
    return "/v1/chats/" + urllib.parse.quote(chat_id, safe="") + "/sandbox"


def _exec_body(
    cmd: Sequence[str], env: Optional[Mapping[str, str]], workdir: str, stdin: str, timeout_s: int
) -> Dict[str, Any]:
    if isinstance(cmd, (str, bytes)):
        raise TypeError("sandboxd: cmd is an argv (a list of strings), e.g. ['sh', '-c', script]")
    body: Dict[str, Any] = {"cmd": list(cmd)}
    if env:
        body["env"] = dict(env)
    if workdir:
        body["workdir"] = workdir
    if stdin:
        body["stdin"] = stdin
    if timeout_s:
        body["timeout_s"] = int(timeout_s)
    return body


def _read(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> bytes:
    try:
        data = resp.read(_MAX_JSON + 1)
    finally:
        conn.close()
    if len(data) > _MAX_JSON:
        raise SandboxdError(resp.status, "internal", "answer too large", f"over {_MAX_JSON} bytes")
    return data


def _read_json(conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> Any:
    data = _read(conn, resp)
    try:
        return json.loads(data)
    except ValueError as e:
        raise SandboxdError(resp.status, "internal", "not JSON", f"decode answer: {e}") from None
