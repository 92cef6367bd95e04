"""A running domain's VNC server as a raw RFB client sees it: its desktop name, and the
throttle on wrong passwords (delayed, then refused) — rfbproto §Security, §ServerInit."""

import socket
import struct
import threading
import time

from tests.system import Instance, wait_for


def vnc_port(inst: Instance, name: str) -> int:
    wait_for(lambda: inst.read(name, "vnc").strip() != "", what="the vnc file")
    return int(inst.read(name, "vnc").strip().rsplit(":", 1)[1])


def recv_exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError(f"closed after {len(out)} of {n} bytes")
        out += chunk
    return out


def security_types(sock: socket.socket) -> tuple[list[int], str]:
    """The 3.8 handshake up to the security types; (types, refusal reason)."""
    assert recv_exact(sock, 12) == b"RFB 003.008\n"
    sock.sendall(b"RFB 003.008\n")
    count = recv_exact(sock, 1)[0]
    if count == 0:
        length = struct.unpack(">I", recv_exact(sock, 4))[0]
        return [], recv_exact(sock, length).decode()
    return list(recv_exact(sock, count)), ""


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=60)


def test_the_desktop_is_named_after_the_domain_and_host(instance: Instance) -> None:
    instance.quick("web1")
    instance.write("web1", "state", "start")
    with connect(vnc_port(instance, "web1")) as sock:
        types, _ = security_types(sock)
        assert 1 in types                       # no password configured: None
        sock.sendall(bytes([1]))
        assert struct.unpack(">I", recv_exact(sock, 4))[0] == 0
        sock.sendall(b"\x01")                   # ClientInit, shared
        width, height = struct.unpack(">HH", recv_exact(sock, 4))
        recv_exact(sock, 16)                    # the pixel format
        length = struct.unpack(">I", recv_exact(sock, 4))[0]
        name = recv_exact(sock, length).decode()
    assert (width, height) == (640, 400)
    assert name == f"web1 on {socket.gethostname()}"


def fail_once(port: int) -> float:
    """One VNC Authentication with a wrong response; seconds until the failure came."""
    with connect(port) as sock:
        types, reason = security_types(sock)
        assert types == [2], (types, reason)
        sock.sendall(bytes([2]))
        recv_exact(sock, 16)                    # the challenge
        sock.sendall(b"\0" * 16)                # no DES of any password gives this... surely
        t = time.monotonic()
        result = struct.unpack(">I", recv_exact(sock, 4))[0]
        took = time.monotonic() - t
        assert result == 1                      # SecurityResult: failed
        length = struct.unpack(">I", recv_exact(sock, 4))[0]
        assert recv_exact(sock, length)         # 3.8 says why
    return took


def test_wrong_passwords_are_delayed_then_refused(instance: Instance) -> None:
    instance.quick("web1", '[vnc]\npassword = "s3cret"\n')
    instance.write("web1", "state", "start")
    port = vnc_port(instance, "web1")
    # the first failure costs base (0.5 s), the second twice that
    assert fail_once(port) >= 0.4
    assert fail_once(port) >= 0.9
    # eight more at once (their delays overlap), then the next is refused outright
    def quietly() -> None:
        try:
            fail_once(port)
        except OSError:
            pass            # still waiting for its delay when the domain is killed
    threads = [threading.Thread(target=quietly) for _ in range(8)]
    for th in threads:
        th.start()
    time.sleep(1.0)                             # their failures are counted on arrival
    with connect(port) as sock:
        types, reason = security_types(sock)
    assert types == [] and "Too many authentication failures" in reason
    instance.write("web1", "state", "kill")     # ends their waits
    for th in threads:
        th.join(timeout=60)
