"""The migration's parts on their own: the target syntax, the session's framing and
channels (over a real socket pair), and rsync through the relay (real rsync)."""

import errno
import os
import socket
import subprocess
from pathlib import Path

import pytest
import trio

from vzfs.base.errors import VzfsError
from vzfs.migrate import mux as muxmod
from vzfs.migrate import target as targetmod
from vzfs.migrate.source import RELAY, RSYNC_FLAGS


# -- the target --------------------------------------------------------------------
@pytest.mark.parametrize("text, host, user, port, mountpoint", [
    ("host2", "host2", None, None, "/run/vzfs"),
    ("ssh://host2", "host2", None, None, "/run/vzfs"),
    ("root@host2:2222/srv/vzfs", "host2", "root", 2222, "/srv/vzfs"),
    ("ssh://admin@10.0.0.7/run/vzfs2/", "10.0.0.7", "admin", None, "/run/vzfs2"),
    ("[fe80::1]:22", "fe80::1", None, 22, "/run/vzfs"),
    ("h.example.org/a/../b", "h.example.org", None, None, "/b"),
])
def test_target_parses(text: str, host: str, user: str | None, port: int | None,
                       mountpoint: str) -> None:
    t = targetmod.parse(text)
    assert (t.host, t.user, t.port, t.mountpoint) == (host, user, port, mountpoint)
    assert targetmod.parse(str(t)) == t


@pytest.mark.parametrize("text", ["", "host two", "-oProxyCommand=x", "host:0", "host:70000",
                                  "host/", "ho$t", "user@", "ftp://host", "host/a b",
                                  "host/x;rm", "host:22:33"])
def test_target_refuses(text: str) -> None:
    with pytest.raises(VzfsError) as info:
        targetmod.parse(text)
    assert info.value.errno == errno.EINVAL


def test_ssh_argv_keeps_options_out_of_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VZFS_SSH", "ssh -F '/etc/vzfs/ssh config'")
    argv = targetmod.ssh_argv(targetmod.parse("bob@h:2200/mnt"), "true")
    assert argv[:3] == ["ssh", "-F", "/etc/vzfs/ssh config"]
    assert "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-l") + 1] == "bob"
    assert argv[-3:] == ["--", "h", "true"]


def test_receiver_command_runs_the_program_the_version_file_names(tmp_path: Path) -> None:
    mnt = tmp_path / "m nt"
    mnt.mkdir()
    (mnt / "version").write_text("vzfs 0.1.0\nprogram echo received\n")
    t = targetmod.Target("h", mountpoint=str(mnt))
    done = subprocess.run(["sh", "-c", targetmod.receiver_command(t)], capture_output=True,
                          text=True)
    assert done.stdout == f"received migrate-receive {mnt}\n"
    (mnt / "version").unlink()
    done = subprocess.run(["sh", "-c", targetmod.receiver_command(t)], capture_output=True,
                          text=True)
    assert done.returncode == targetmod.NO_VZFS_EXIT
    assert "no vzfs serves" in done.stderr


# -- framing -----------------------------------------------------------------------
def test_deframer_takes_frames_split_anywhere() -> None:
    frames = [(0, b'{"op":"info","id":1}\n'), (3, b"x" * 1000), (3, b""), (200, b"\0\n")]
    data = b"".join(muxmod.frame(c, p) for c, p in frames)
    for cut in range(len(data) + 1):
        d = muxmod.Deframer()
        got = list(d.feed(data[:cut])) + list(d.feed(data[cut:]))
        assert got == frames, cut


def test_deframer_refuses_a_huge_frame() -> None:
    with pytest.raises(muxmod.FrameError):
        list(muxmod.Deframer().feed(muxmod.HEADER.pack(1, muxmod.MAX_FRAME + 1)))


# -- the session over a real socket pair --------------------------------------------


@pytest.mark.trio
async def test_requests_channels_and_kept_channels() -> None:
    a_sock, b_sock = trio.socket.socketpair()
    a_stream, b_stream = trio.SocketStream(a_sock), trio.SocketStream(b_sock)

    async def handler(msg: dict) -> dict:
        if msg["op"] == "add":
            return {"sum": msg["x"] + msg["y"]}
        if msg["op"] == "bug":
            raise RuntimeError("a bug")
        raise VzfsError(errno.ENOSPC, "no room")

    events: list[dict] = []
    left = muxmod.Mux(a_stream, a_stream)
    right = muxmod.Mux(b_stream, b_stream, handler=handler, on_event=events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(left.run)
        await nursery.start(right.run)
        assert (await left.request("adding", "add", x=2, y=3))["sum"] == 5
        with pytest.raises(VzfsError) as info:
            await left.request("filling", "fill")
        assert info.value.errno == errno.ENOSPC and "filling: no room" in info.value.sentence
        # The serving side's one boundary: a bug costs its request, not the session.
        with pytest.raises(VzfsError) as info:
            await left.request("asking", "bug")
        assert info.value.errno == errno.EIO and "RuntimeError: a bug" in info.value.sentence
        assert (await left.request("adding", "add", x=1, y=1))["sum"] == 2
        await left.event(event="hello", n=1)

        # A channel: bytes the right side sent before the left bound it are kept,
        # in order, and an end of stream arrives as one.
        l_local, l_mux = trio.socket.socketpair()
        r_local, r_mux = trio.socket.socketpair()
        right.bind(5, trio.SocketStream(r_mux))
        await trio.SocketStream(r_local).send_all(b"early ")
        await trio.sleep(0.05)
        left.bind(5, trio.SocketStream(l_mux))
        r = trio.SocketStream(r_local)
        await r.send_all(b"late")
        await r.send_eof()
        got = b""
        async for data in trio.SocketStream(l_local):
            got += data
        assert got == b"early late"
        assert left.received[5] == len(b"early late")

        # A kept channel: the other end's EOF is not passed on.
        k_local, k_mux = trio.socket.socketpair()
        kr_local, kr_mux = trio.socket.socketpair()
        left.bind(6, trio.SocketStream(k_mux), keep=True)
        right.bind(6, trio.SocketStream(kr_mux))
        kr = trio.SocketStream(kr_local)
        await kr.send_all(b"page")
        await kr.send_eof()
        k = trio.SocketStream(k_local)
        assert await k.receive_some(100) == b"page"
        with trio.move_on_after(0.2) as waited:
            await k.receive_some(100)
        assert waited.cancelled_caught, "an EOF came through a kept channel"

        # The session ends: a pending request fails with EIO, not a hang.
        await right.close()
        with pytest.raises(VzfsError) as info:
            await left.request("asking", "add", x=1, y=1, timeout=5)
        assert info.value.errno == errno.EIO
        nursery.cancel_scope.cancel()
    assert events == [{"event": "hello", "n": 1}]


# -- rsync through the relay -------------------------------------------------------
def test_rsync_through_the_relay(tmp_path: Path) -> None:
    """The relay hands rsync's remote command line over, then both directions, and
    ends when the receiving rsync has: what a migration's copy runs through."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_bytes(os.urandom(300_000))
    os.symlink("d/f", src / "link")
    (dst).mkdir()
    (dst / "stale").write_text("goes")
    from_rsync, relay_w = socket.socketpair()
    to_rsync, relay_r = socket.socketpair()
    env = {**os.environ, "BASH_ENV": str(tmp_path / "bash_env")}
    (tmp_path / "bash_env").write_text("read -r line\n")     # would eat rsync's bytes
    client = subprocess.Popen(
        ["rsync", *RSYNC_FLAGS, "--rsh", RELAY.format(w=relay_w.fileno(), r=relay_r.fileno()),
         f"{src}/", "target:/ignored/"], pass_fds=(relay_w.fileno(), relay_r.fileno()),
        stderr=subprocess.PIPE, env=env)
    relay_w.close()
    relay_r.close()
    first = b""
    while b"\n" not in first:
        first += from_rsync.recv(65536)
    line, _, rest = first.partition(b"\n")
    argv = line.decode().rstrip("\0").split("\0")
    assert argv[:2] == ["rsync", "--server"] and "--sender" not in argv
    server = subprocess.Popen(argv[:-1] + [f"{dst}/"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, bufsize=0)
    import threading

    def up() -> None:
        assert server.stdin is not None
        server.stdin.write(rest)
        while data := from_rsync.recv(65536):
            server.stdin.write(data)
        server.stdin.close()

    def down() -> None:
        assert server.stdout is not None
        while data := os.read(server.stdout.fileno(), 65536):
            to_rsync.sendall(data)
        to_rsync.close()

    threads = [threading.Thread(target=up), threading.Thread(target=down)]
    for t in threads:
        t.start()
    assert client.wait(timeout=30) == 0, client.stderr.read() if client.stderr else ""
    assert server.wait(timeout=30) == 0
    for t in threads:
        t.join(timeout=10)
    assert (dst / "d" / "f").read_bytes() == (src / "d" / "f").read_bytes()
    assert os.readlink(dst / "link") == "d/f"
    assert not (dst / "stale").exists()


# -- the daemon's socket for the receiving end ----------------------------------------
def test_the_daemon_socket_is_root_only_and_refuses_bad_requests(instance) -> None:
    import json
    import stat as statmod
    path = instance.state / "daemon.sock"
    assert statmod.S_IMODE(os.stat(path).st_mode) & 0o077 == 0
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(path))
        f = s.makefile("rwb")

        def ask(msg: dict) -> dict:
            f.write(json.dumps(msg).encode() + b"\n")
            f.flush()
            return json.loads(f.readline())

        bad = ask({"id": 1, "op": "check", "name": "web1"})        # no id_
        assert (bad["ok"], bad["errno"]) == (False, errno.EINVAL)
        stray = ask({"id": 2, "op": "restore", "name": "web1"})    # never reserved here
        assert (stray["ok"], stray["errno"]) == (False, errno.EPERM)
        assert ask({"id": 3, "op": "nonsense", "name": "web1"})["ok"] is False
        info = ask({"id": 4, "op": "info"})
        assert info["ok"] and info["state_dir"] == str(instance.state)
    # The daemon serves on.
    assert "vzfs" in (instance.mnt / "version").read_text()
