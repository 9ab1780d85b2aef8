"""The SDK against the real sandboxd (see conftest.py)."""

from __future__ import annotations

import io
import json
import time
import uuid
from pathlib import Path

import pytest

import sandboxd

REPO = Path(__file__).resolve().parents[3]


def new_chat() -> str:
    return str(uuid.uuid4())


def test_every_operation_has_a_method():
    doc = json.loads((REPO / "api" / "openapi.json").read_text())
    ids = set()
    for path, ops in doc["paths"].items():
        if path.startswith("/mcp/"):
            continue  # the MCP endpoint is for MCP clients, not part of the REST SDK
        for op in ops.values():
            if isinstance(op, dict) and op.get("x-websocket"):
                continue  # a WebSocket (the terminal): the Go client and sandboxctl speak it
            if isinstance(op, dict) and "operationId" in op:
                ids.add(op["operationId"])
    assert ids, "no operations in api/openapi.json"
    assert set(sandboxd.OPERATIONS) == ids, "OPERATIONS must map exactly the document's operations"
    for op_id, method in sandboxd.OPERATIONS.items():
        assert callable(getattr(sandboxd.Client, method, None)), f"{op_id}: no Client.{method}"


def test_every_error_code_has_a_class():
    doc = json.loads((REPO / "api" / "openapi.json").read_text())
    codes = doc["components"]["schemas"]["ErrorModel"]["properties"]["code"]["enum"]
    assert set(codes) == set(sandboxd.ERROR_CLASSES)


def test_create_reuse_get_list_delete(client):
    chat = new_chat()
    s, result = client.create(chat, agent_id="py")
    assert result == "created"
    assert s.chat_id == chat and s.agent_id == "py" and s.status == "RUNNING" and not s.expired
    assert s.expires_at > s.created_at
    again, result = client.create(chat.upper(), agent_id="py")  # any spelling, canonical back
    assert result == "reused" and again.session_id == s.session_id and again.chat_id == chat
    assert client.get(chat).session_id == s.session_id
    page = client.list(agent_id="py")
    assert chat in [x.chat_id for x in page.items]
    assert client.list(agent_id="nobody-" + chat).items == []
    gone = client.delete(chat)
    assert gone.result == "deleted" and gone.session_id == s.session_id
    with pytest.raises(sandboxd.NotFound) as e:
        client.get(chat)
    assert e.value.status == 404 and e.value.code == "not_found"
    assert client.delete(chat).result == "not_found"


def test_list_pages(client):
    chats = sorted(new_chat() for _ in range(3))
    agent = "pager-" + chats[0][:8]
    try:
        for c in chats:
            client.create(c, agent_id=agent)
        first = client.list(agent_id=agent, limit=2)
        assert [x.chat_id for x in first.items] == chats[:2] and first.next
        rest = client.list(agent_id=agent, limit=2, after=first.next)
        assert [x.chat_id for x in rest.items] == chats[2:] and rest.next == ""
    finally:
        for c in chats:
            client.delete(c)


def test_exec_buffered_streamed_and_timeout(client):
    chat = new_chat()
    client.create(chat)
    try:
        res = client.exec(chat, ["sh", "-c", 'echo "$GREETING"; cat; echo oops >&2; exit 3'],
                          env={"GREETING": "hi"}, stdin="in\n")
        assert (res.exit_code, res.stdout, res.stderr, res.timed_out) == (3, "hi\nin\n", "oops\n", False)

        events = list(client.exec_stream(chat, ["sh", "-c", "echo a; sleep 0.2; echo b >&2; echo c"]))
        assert events[-1].type == "exit" and events[-1].exit_code == 0
        out = "".join(e.data for e in events if e.type == "stdout")
        err = "".join(e.data for e in events if e.type == "stderr")
        assert (out, err) == ("a\nc\n", "b\n")
        assert all(e.type != "exit" for e in events[:-1])

        res = client.exec(chat, ["sleep", "30"], timeout_s=1)
        assert res.timed_out and res.exit_code == -1
        last = list(client.exec_stream(chat, ["sleep", "30"], timeout_s=1))[-1]
        assert last.type == "exit" and last.timed_out and last.exit_code == -1

        with pytest.raises(TypeError):
            client.exec(chat, "echo hi")
        with pytest.raises(sandboxd.Invalid):
            client.exec(chat, ["true"], timeout_s=10**6)  # over exec.max_timeout
        with pytest.raises(sandboxd.NotFound):
            list(client.exec_stream(new_chat(), ["true"]))
    finally:
        client.delete(chat)


def test_files_round_trip_and_escape_refused(client):
    chat = new_chat()
    client.create(chat)
    try:
        data = bytes(range(256)) * 1000
        info = client.upload(chat, "dir/blob.bin", data)
        assert (info.path, info.size, info.is_dir) == ("dir/blob.bin", len(data), False)
        assert client.download(chat, "dir/blob.bin") == data
        streamed = client.upload(chat, "/workspace/dir/streamed.txt", io.BytesIO(b"from a file object"))
        assert streamed.path == "dir/streamed.txt"
        out = io.BytesIO()
        assert client.download_to(chat, "dir/streamed.txt", out) == len(b"from a file object")
        assert out.getvalue() == b"from a file object"
        assert client.exec(chat, ["cat", "dir/streamed.txt"]).stdout == "from a file object"
        names = sorted(f.path for f in client.list_files(chat, "dir"))
        assert names == ["dir/blob.bin", "dir/streamed.txt"]
        assert [f.path for f in client.list_files(chat) if f.is_dir] == ["dir"]

        for bad in ("../escape.txt", "dir/../../escape.txt"):
            with pytest.raises(sandboxd.Invalid) as e:
                client.upload(chat, bad, b"x")
            assert e.value.status == 422 and e.value.code == "invalid"
        with pytest.raises(sandboxd.Invalid):
            client.download(chat, "../../etc/passwd")
        with pytest.raises(sandboxd.NotFound):
            client.download(chat, "no/such/file")
    finally:
        client.delete(chat)


def test_keepalive(client):
    chat = new_chat()
    s, _ = client.create(chat)
    try:
        later = client.keepalive(chat, 2 * 3600)
        assert later.session_id == s.session_id and later.expires_at > s.expires_at
        assert client.get(chat).expires_at == later.expires_at
        with pytest.raises(sandboxd.NotFound):
            client.keepalive(new_chat(), 60)
    finally:
        client.delete(chat)


def test_egress_denials(client):
    # The default profile has no network: its sandbox's list is empty; a chat without a
    # sandbox is NotFound. (Refusals themselves are tested through the binary, in Go.)
    chat = new_chat()
    client.create(chat)
    try:
        assert client.egress_denials(chat) == []
        with pytest.raises(sandboxd.NotFound):
            client.egress_denials(new_chat())
    finally:
        client.delete(chat)


def test_conflict(client):
    chat = new_chat()
    client.create(chat, agent_id="a")
    try:
        with pytest.raises(sandboxd.Conflict) as e:
            client.create(chat, agent_id="b")
        assert e.value.status == 409 and e.value.code == "conflict"
        assert not isinstance(e.value, sandboxd.Expired)
        assert client.get(chat).agent_id == "a"
    finally:
        client.delete(chat)


def test_expired(start_server):
    srv = start_server("SANDBOXD_TTL=1s", "SANDBOXD_SWEEP_INTERVAL=1h")
    c = sandboxd.Client(srv.url, srv.token, timeout=60)
    chat = new_chat()
    first, _ = c.create(chat)
    deadline = time.monotonic() + 30
    while not c.get(chat).expired:
        assert time.monotonic() < deadline, "the sandbox did not expire"
        time.sleep(0.2)
    for call in (lambda: c.exec(chat, ["true"]), lambda: c.keepalive(chat, 60),
                 lambda: c.download(chat, "x")):
        with pytest.raises(sandboxd.Expired) as e:
            call()
        assert e.value.status == 409 and e.value.code == "expired"
        assert not isinstance(e.value, sandboxd.Conflict)
    # Not asserting s.expired: with a 1 s TTL a slow create may answer an already
    # expired session.
    s, result = c.create(chat)
    assert result == "replaced" and s.session_id != first.session_id
    c.delete(chat)


def test_bad_token_unauthorized(server):
    bad = sandboxd.Client(server.url, "not-" + server.token)
    with pytest.raises(sandboxd.Unauthorized) as e:
        bad.list()
    assert e.value.status == 401 and e.value.code == "unauthorized"
    with pytest.raises(sandboxd.Unauthorized):
        sandboxd.Client(server.url).get(new_chat())


def test_invalid_chat_id(client):
    with pytest.raises(sandboxd.Invalid) as e:
        client.create("not-a-uuid")
    assert e.value.status == 422


def test_operations_endpoints(client):
    assert client.healthz() == "ok"
    assert client.readyz() == "ready"
    assert "sandbox" in client.metrics()
