"""Starts the real sandboxd for the SDK's tests: the binary built from this repository
(go build ./cmd/sandboxd, with the in-sandbox agent beside it), on its own SQLite file, volume root, docker.instance and
token, on the real Docker engine; every container of its instance is removed at the
end. Without go or a Docker engine the tests skip, except with CI=true, where that is a
failure. This folder on sys.path (pytest's rootdir conftest) makes `import sandboxd`
work without installing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[2]
IMAGE = "sandboxd-sandbox:latest"
START_TIMEOUT = 60.0


def _missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(why, pytrace=False)
    pytest.skip(why)


class Server:
    """One run of the binary: url, token, instance, volume_root."""

    def __init__(self, binary: Path, settings: List[str]) -> None:
        self.token = "sdk-" + secrets.token_hex(8)
        self.instance = "pysdk-" + secrets.token_hex(6)
        self.data = Path(tempfile.mkdtemp(prefix="sandboxd-pysdk-"))
        self.volume_root = self.data / "volumes"
        self.log: List[str] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDBOXD_")}
        env.update({
            "SANDBOXD_LISTEN": "127.0.0.1:0",
            "SANDBOXD_TOKENS": self.token,
            "SANDBOXD_REGISTRY": "sqlite:" + str(self.data / "sandboxd.db"),
            "SANDBOXD_DOCKER_INSTANCE": self.instance,
            "SANDBOXD_DOCKER_VOLUME_ROOT": str(self.volume_root),
            "SANDBOXD_AGENTS_DEFAULT_IMAGE": IMAGE,
            "SANDBOXD_LOG_FORMAT": "json",
        })
        env.update(kv.split("=", 1) for kv in settings)
        self.proc = subprocess.Popen(
            [str(binary)], cwd=self.data, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        listening = threading.Event()
        self.url = ""

        def read() -> None:  # the log, and the address sandboxd logs when it listens
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.log.append(line)
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and rec.get("msg") == "listening" and not self.url:
                    self.url = "http://" + rec["addr"]
                    listening.set()
            listening.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not listening.wait(START_TIMEOUT) or not self.url:
            self.stop()
            raise RuntimeError("sandboxd did not listen:\n" + "".join(self.log))

    def stop(self) -> None:
        """Stops sandboxd (SIGTERM), removes its instance's containers and its data."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        ids = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "label=sandboxd.instance=" + self.instance],
            capture_output=True, text=True, check=True,
        ).stdout.split()
        if ids:
            subprocess.run(["docker", "rm", "-f", "-v", *ids], capture_output=True, check=True)
        shutil.rmtree(self.data, ignore_errors=True)


@pytest.fixture(scope="session")
def sandboxd_binary() -> Iterator[Path]:
    if shutil.which("go") is None:
        _missing("no go on PATH to build sandboxd")
    if shutil.which("docker") is None:
        _missing("no docker CLI")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        _missing("no Docker engine")
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        build = subprocess.run([str(REPO / "scripts" / "build-image.sh")], capture_output=True, text=True)
        if build.returncode != 0:
            pytest.fail("build the sandbox image:\n" + build.stdout + build.stderr, pytrace=False)
    out = Path(tempfile.mkdtemp(prefix="sandboxd-pysdk-bin-"))
    binary = out / "sandboxd"
    build = subprocess.run(["go", "build", "-o", str(binary), "./cmd/sandboxd"], cwd=REPO,
                           capture_output=True, text=True)
    if build.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        pytest.fail("go build ./cmd/sandboxd:\n" + build.stderr, pytrace=False)
    # The in-sandbox agent beside it, where sandboxd finds it: commands run through it.
    agent = subprocess.run(["go", "build", "-o", str(out / "sandboxd-agent"), "./cmd/sandboxd-agent"], cwd=REPO,
                           capture_output=True, text=True, env={**os.environ, "CGO_ENABLED": "0"})
    if agent.returncode != 0:
        shutil.rmtree(out, ignore_errors=True)
        pytest.fail("go build ./cmd/sandboxd-agent:\n" + agent.stderr, pytrace=False)
    yield binary
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="session")
def start_server(sandboxd_binary: Path) -> Iterator[Callable[..., Server]]:
    """Starts a sandboxd with more SANDBOXD_...=... settings; all are stopped at the end."""
    started: List[Server] = []

    def start(*settings: str) -> Server:
        s = Server(sandboxd_binary, list(settings))
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server(start_server: Callable[..., Server]) -> Server:
    return start_server()


@pytest.fixture()
def client(server: Server):
    import sandboxd

    return sandboxd.Client(server.url, server.token, timeout=60)
