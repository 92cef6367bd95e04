"""When `echo start > state` returns, the domain's files hold their values (pid, vnc,
vnc_websocket, stats), later changes raise inotify, and a VNC server that cannot listen
fails the start unless `[vnc] required = false` (issue 16)."""

import errno
import os
import signal
import socket
import subprocess
import time

import pytest

from tests.system import Instance, sh, wait_for
from tests.test_vnc_domain import vnc_server_pid


def stats(inst: Instance, name: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in inst.read(name, "stats").splitlines())}


@pytest.mark.parametrize("run", range(3))
def test_the_files_are_ready_when_start_returns(instance: Instance, run: int) -> None:
    d = instance.quick("web1")
    r = sh(f"echo start > {d}/state && cat {d}/pid {d}/vnc {d}/vnc_websocket {d}/stats")
    assert r.returncode == 0, r.stderr
    pid, vnc, ws, *rest = r.stdout.splitlines()
    assert int(pid) > 1
    assert vnc.startswith("127.0.0.1:59"), r.stdout
    assert ws.startswith("127.0.0.1:"), r.stdout
    assert "pids 1" in rest or any(line.startswith("pids ") and int(line.split()[1]) >= 1
                                   for line in rest), rest
    # and the address is a listening VNC server
    host, port = vnc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        assert s.recv(12) == b"RFB 003.008\n"


def test_a_new_vnc_address_raises_inotify(instance: Instance) -> None:
    instance.quick("web1")
    instance.write("web1", "state", "start")
    vnc_file = instance.dom("web1") / "vnc"
    watcher = subprocess.Popen(["inotifywait", "-q", "-e", "modify", "-t", "20", str(vnc_file)],
                               stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)                 # inotifywait has its watch

    os.kill(vnc_server_pid(instance, "web1"), signal.SIGKILL)
    out, _ = watcher.communicate(timeout=30)
    assert watcher.returncode == 0 and "MODIFY" in out, out
    wait_for(lambda: instance.read("web1", "vnc") != "", what="the restarted server")


def test_a_taken_port_fails_the_start(instance: Instance) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        instance.quick("web1", f"[vnc]\nport = {port}\nwebsocket = false\n")
        with pytest.raises(OSError) as info:
            instance.write("web1", "state", "start")
        assert info.value.errno == errno.EADDRINUSE
    assert instance.read("web1", "state") == "stopped\n"
    assert instance.read("web1", "pid") == ""
    error = instance.read("web1", "error")
    assert error.startswith("cannot start domain web1: its VNC server cannot listen: "), error
    assert "required = false" in error


def test_an_address_not_ours_fails_the_start(instance: Instance) -> None:
    instance.quick("web1", '[vnc]\nlisten = "8.8.8.8"\n')
    with pytest.raises(OSError) as info:
        instance.write("web1", "state", "start")
    assert info.value.errno == errno.EADDRNOTAVAIL
    assert instance.read("web1", "state") == "stopped\n"
    r = sh(f"echo start > {instance.dom('web1')}/state")
    assert "Cannot assign requested address" in r.stderr


def test_not_required_starts_without_vnc_and_backs_off(instance: Instance) -> None:
    instance.quick("web1", '[vnc]\nlisten = "8.8.8.8"\nrequired = false\n')
    instance.write("web1", "state", "start")
    assert instance.read("web1", "state") == "running\n"
    assert instance.read("web1", "vnc") == ""
    assert instance.read("web1", "error").startswith(
        "domain web1 runs without its VNC server: cannot listen on 8.8.8.8")
    time.sleep(6)
    # restarts at 0.05, 0.25, 1.05, 4.25 s… (once a second for ever was 6 by now)
    assert 1 <= stats(instance, "web1")["vnc_restarts"] <= 4
    assert instance.read("web1", "state") == "running\n"
