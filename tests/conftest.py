"""Shared fixtures: a real redis-server, the farm, the injected clock, the tests' GeoIP database.

The redis-server runs for the whole session on a free port; `redis_url` flushes it per test.
The helpers behind the fixtures are in tests/support/.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis

from redirector.geo import GeoReader
from tests.farm import Farm
from tests.support import world
from tests.support.clock import Clock

_START_TIMEOUT = 10.0  # seconds for redis-server to answer PING after launch
_STOP_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process on a fixed loopback port, without persistence.

    `stop()` and `start()` let outage tests take it down and bring it back on the same port;
    a restarted server is empty. Both are idempotent.
    """

    def __init__(self, binary: str, workdir: Path, port: int) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Launch the server if it is not running and wait until it answers PING."""
        if self.running:
            return
        log = self.workdir / "redis.log"
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(log),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                break
            if _answers_ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        raise RuntimeError(f"redis-server did not start on port {self.port}:\n{tail}")

    def stop(self) -> None:
        """Stop the server if it runs, and wait until it has exited and freed the port."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(_STOP_TIMEOUT)

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """Down inside the block, up again after it even if the block fails."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def flush(self) -> None:
        """Start the server if a test left it down, then empty every database."""
        self.start()
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()


@pytest.fixture(scope="session", autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`serve --workers N` keeps its file store under $XDG_STATE_HOME by default
    (`workers.default_state_dir`): the servers tests start keep theirs in this session's
    temporary directory, never in the home directory of whoever runs the tests."""
    path = tmp_path_factory.mktemp("state-home")
    os.environ.pop("STATE_DIRECTORY", None)
    os.environ["XDG_STATE_HOME"] = str(path)
    return path


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server for the session: `.url`, `.port`, `.stop()`, `.start()`, `.stopped()`.

    Tests that stop it must start it again (`with redis_server.stopped(): ...` does);
    `redis_url` also restarts it if a test left it down.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        # Never skip: a missing server is a setup fault, and dev/test.sh installs it.
        pytest.fail("redis-server is not on PATH: run dev/test.sh, which installs it")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis"), free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis-server, running and flushed for this test."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture
async def farm() -> AsyncIterator[Farm]:
    f = Farm()
    await f.start()
    yield f
    await f.stop()


@pytest.fixture
def clock() -> Clock:
    """A clock at t = 1000 that moves only when the test moves it."""
    return Clock()


@pytest.fixture
def geo(tmp_path: Path) -> GeoReader:
    """A reader on `world.city_db`: the clients of tests/support/world.py, placed."""
    return world.geo(tmp_path)
