"""sd_notify against a real Unix datagram socket: what systemd would receive."""

from __future__ import annotations

import os
import socket

import pytest

from agent.sdnotify import Notifier


@pytest.fixture
def listener(tmp_path):
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(1.0)
    yield str(path), sock
    sock.close()


def recv(sock) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.splitlines())


def test_ready_status_watchdog_stopping_arrive_as_datagrams(listener):
    path, sock = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready(status="3 devices, tick 1")
    assert recv(sock) == {"READY": "1", "STATUS": "3 devices, tick 1"}
    n.status("line one\nline two")
    assert recv(sock) == {"STATUS": "line one line two"}
    n.watchdog()
    assert recv(sock) == {"WATCHDOG": "1"}
    n.stopping()
    assert recv(sock) == {"STOPPING": "1"}
    n.close()


def test_abstract_namespace_address():
    name = f"evsite-test-{os.getpid()}-{id(object())}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1.0)
    try:
        n = Notifier.from_env({"NOTIFY_SOCKET": "@" + name})
        assert n.watchdog()
        assert recv(sock) == {"WATCHDOG": "1"}
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    assert n.watchdog_interval() is None


def test_watchdog_interval_is_half_of_watchdog_usec(listener):
    path, _ = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000"})
    assert n.watchdog_interval() == 15.0


def test_watchdog_for_another_pid_is_ignored(listener):
    path, _ = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_env(env).watchdog_interval() is None
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval() == 15.0


def test_bad_watchdog_usec_is_ignored_with_a_warning(listener, caplog):
    path, _ = listener
    n = Notifier.from_env({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "soon"})
    assert n.watchdog_interval() is None
    assert "WATCHDOG_USEC='soon'" in caplog.text


def test_missing_socket_warns_once_and_does_not_raise(tmp_path, caplog):
    n = Notifier(str(tmp_path / "gone"))
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert caplog.text.count("cannot notify systemd") == 1
    n.close()
