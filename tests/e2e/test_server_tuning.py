"""The server tuning of PERF.md on real servers: TCP_NODELAY on accepted sockets, a frozen heap.

TCP_NODELAY is read from the server's own socket: the test opens a websocket, finds the
server-side socket of that connection in ``/proc`` (by its inode), copies the descriptor out of
the server process with ``pidfd_getfd`` (Linux 5.6+, allowed on our own child) and asks the
kernel with ``getsockopt``. Plain ``streamlit run`` is the control: the same probe must read 0
there, so a probe that always said 1 would be caught.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from stalwart.web.server_tuning import enable_tcp_nodelay
from tests.conftest import free_port
from tests.e2e.conftest import (
    LAUNCHERS,
    WS_TIMEOUT_S,
    LiveApp,
    launch,
    rerun_over_websocket,
)

SYS_PIDFD_GETFD = 438  # the same number on every Linux architecture


def server_socket_inode(server_port: int, client_port: int) -> int | None:
    """The inode of the server's end of the TCP connection from ``client_port``, if listed."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            if (local_port, remote_port) == (server_port, client_port):
                return int(fields[9])
    return None


def fd_of_inode(pid: int, inode: int) -> int | None:
    """The descriptor number under which process ``pid`` holds socket ``inode``."""
    for entry in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if os.readlink(entry) == f"socket:[{inode}]":
                return int(entry.name)
        except OSError:
            continue  # closed while we looked
    return None


@contextmanager
def borrowed_socket(pid: int, target_fd: int) -> Iterator[socket.socket]:
    """A duplicate of descriptor ``target_fd`` of process ``pid``, as a socket; closed after."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)
        if fd < 0:
            code = ctypes.get_errno()
            if code in {errno.ENOSYS, errno.EPERM}:
                pytest.skip(f"pidfd_getfd unavailable here: {os.strerror(code)}")
            raise OSError(code, os.strerror(code))
    finally:
        os.close(pidfd)
    # Closing our duplicate leaves the server's descriptor and the connection untouched.
    with socket.socket(fileno=fd) as sock:
        yield sock


def accepted_nodelay(server: LiveApp) -> int:
    """TCP_NODELAY of the socket the server accepted for a websocket opened now (0 or 1)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        pytest.skip("reading another process's socket needs Linux with pidfd_open")
    url = f"ws://127.0.0.1:{server.port}/_stcore/stream"
    protocols = [Subprotocol("streamlit"), Subprotocol("probe")]
    with connect(url, subprotocols=protocols, open_timeout=WS_TIMEOUT_S) as ws:
        client_port = ws.socket.getsockname()[1]
        # The handshake has completed, so the server has accepted the socket and holds it.
        inode = server_socket_inode(server.port, client_port)
        assert inode is not None, "the connection is not in /proc/net/tcp"
        fd = fd_of_inode(server.pid, inode)
        assert fd is not None, f"the server (pid {server.pid}) holds no socket {inode}"
        with borrowed_socket(server.pid, fd) as sock:
            return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


# "streamlit run app.py" binds before our code loads; the app's lifespan sets the option on the
# listening socket then (see the control below for plain Streamlit).
@pytest.mark.parametrize(
    "launcher", ["app run", "python app.py", "uvicorn app:app", "streamlit run app.py"]
)
def test_accepted_connections_send_without_nagle_delays(tmp_path: Path, launcher: str) -> None:
    port = free_port()
    server = launch(LAUNCHERS[launcher](port), port, tmp_path)
    try:
        nodelay = accepted_nodelay(server)
    finally:
        server.stop()

    assert nodelay == 1


@pytest.mark.parametrize("launcher", ["app run", "uvicorn app:app"])
def test_the_startup_heap_is_frozen_once_the_app_has_started(tmp_path: Path, launcher: str) -> None:
    port = free_port()
    server = launch(LAUNCHERS[launcher](port), port, tmp_path)
    server.stop()

    frozen = [r for r in server.log_records() if r.get("event") == "startup heap frozen"]
    assert len(frozen) == 1, server.logs()
    # Thousands of objects (modules, pandas, pyarrow, ...) moved out of every later collection.
    assert frozen[0]["frozen_objects"] > 10_000
    assert frozen[0]["missing_modules"] == []
    events = [r.get("event") for r in server.log_records()]
    assert events.count("streamlit post-run garbage collection off") == 1


@pytest.mark.parametrize("after_every_run", [False, True])
def test_no_full_collection_after_each_run_unless_asked_for(
    tmp_path: Path, after_every_run: bool
) -> None:
    port = free_port()
    env = {"STALWART_GC_AFTER_EVERY_RUN": "true"} if after_every_run else {}
    server = launch(LAUNCHERS["app run"](port), port, tmp_path, **env)
    try:
        before = full_collections(server)
        for _ in range(RUNS):
            messages = rerun_over_websocket(server.port)
            assert messages[-1].script_finished == ForwardMsg.FINISHED_SUCCESSFULLY
        after = full_collections(server)
    finally:
        server.stop()

    if after_every_run:
        assert after - before >= RUNS  # Streamlit's gc.collect(2) after each run
    else:
        # Python's own collector may run a full collection now and then, not once per run.
        assert after - before < RUNS // 2


RUNS = 6


def full_collections(server: LiveApp) -> float:
    """The server's count of generation-2 collections, from its /metrics."""
    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "python_gc_collections_total" and sample.labels == {
                "generation": "2"
            }:
                return sample.value
    raise AssertionError("no python_gc_collections_total{generation='2'} in /metrics")


def test_plain_streamlit_keeps_nagle_on_which_is_why_stalwart_turns_it_off(
    tmp_path: Path,
) -> None:
    # The control for the probe above, and the reason for enable_tcp_nodelay(): if this starts
    # failing, Streamlit sets TCP_NODELAY itself and the wrapper can go.
    script = tmp_path / "plain.py"
    script.write_text("import streamlit as st\nst.write('plain')\n")
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(script),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
    ]
    # a plain Streamlit app: its output is Streamlit's text, not Stalwart's log
    server = launch(command, port, tmp_path, health_path="/_stcore/health", check_logs=False)
    try:
        nodelay = accepted_nodelay(server)
    finally:
        server.stop()

    assert nodelay == 0


def test_the_wrapped_bind_gives_accepted_sockets_tcp_nodelay() -> None:
    # In this process, on a real socket bound by Streamlit's own function: portable (no /proc).
    from streamlit.web.server.starlette import starlette_server

    assert enable_tcp_nodelay()
    wrapped = starlette_server._bind_socket
    assert enable_tcp_nodelay()
    assert starlette_server._bind_socket is wrapped  # wrapped once, however often called
    listening = starlette_server._bind_socket("127.0.0.1", 0, 8)
    try:
        listening.setblocking(True)
        with socket.create_connection(listening.getsockname(), timeout=WS_TIMEOUT_S):
            accepted, _ = listening.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        listening.close()
