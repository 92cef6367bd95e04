"""Record the terminal sessions the backend-equivalence test replays: real programs on a real pty.

Run ``python tests/sessions/capture.py`` to (re)record; each program runs on an 80x25
pty with TERM=xterm-256color (TERM=linux, what a domain's console has, for the sessions
in ``LINUX``), its keystrokes typed with pauses, and everything it writes is saved as
``NAME.bin`` beside this file.
"""

from __future__ import annotations

import fcntl
import os
import pathlib
import pty
import select
import struct
import sys
import termios
import time

HERE = pathlib.Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "vzfs" / "terminal" / "palette.py"

# name: (argv, [(delay in seconds, keys), ...])
SESSIONS: dict[str, tuple[list[str], list[tuple[float, bytes]]]] = {
    "ls_color": (["ls", "-la", "--color=always", "/etc"], []),
    "vim": (["vim", "-u", "DEFAULTS", "-i", "NONE", "-c", "syntax on", str(SOURCE)],
            [(1.0, b"20j"), (0.3, b"/PALETTE\r"), (0.3, b"Go# \xe4\xb8\xad\xe6\x96\x87 wide\x1b"),
             (0.3, b"gg"), (0.3, b"\x06"), (0.3, b":q!\r")]),
    "less": (["less", "-R", str(SOURCE)], [(0.5, b" "), (0.3, b"/colour\r"), (0.3, b"b"), (0.3, b"q")]),
    "man": (["man", "ls"], [(1.0, b" "), (0.3, b"/sort\r"), (0.3, b"q")]),
    "top": (["top", "-d", "0.3", "-n", "4"], []),
    "bash": (["bash", "--norc", "--noprofile", "-i"],
             [(0.5, b"PS1='\\[\\e[1;32m\\]\\u@host\\[\\e[0m\\]:\\[\\e[34m\\]\\w\\[\\e[0m\\]\\$ '\r"),
              (0.3, b"printf '\\e[31mred\\e[0m \\e[38;5;208morange\\e[0m \\e[38;2;1;2;3mrgb\\e[0m\\n'\r"),
              (0.3, "echo 中文 e\u0301 done\r".encode()),
              (0.3, b"seq 1 60\r"),
              (0.3, b"printf '\\e[2J\\e[H\\e[3;20r\\e[20;1Hscrolled\\n\\n\\e[r\\e[5S\\e[2T'; echo\r"),
              (0.3, b"exit\r")]),
    # What a Linux console draws differently from xterm (issue 21), by real programs.
    "linux_console": (["bash", "--norc", "--noprofile", "-i"],
                      [(0.5, b"PS1='$ '\r"),
                       (0.3, b"printf 'A\\e]RB\\nC\\n'; echo E\r"),
                       (0.3, b"printf 'A\\e[?1049hB\\e[?1049lC\\e[?1049lD\\n'\r"),
                       (0.3, b"printf 'cafe\\u0301 \\e[2mdim\\e[22m \\e[8mhidden\\e[28m \\e[37mgrey\\e[m\\n'\r"),
                       (0.3, b"printf '\\e]P1ff0000\\e[31mred\\e[m \\e]P2\\n00ff0\\r0\\n'\r"),
                       (0.3, b"setterm --inversescreen on; tput flash; printf '\\e[4 q'\r"),
                       (0.3, b"exit\r")]),
    "linux_reset": (["bash", "--norc", "--noprofile", "-i"],
                    [(0.5, b"PS1='$ '\r"),
                     (0.3, b"printf '\\e]P4ffffff\\e[?5h\\e[5 q'; reset; echo after-reset\r"),
                     (2.0, b"tput reset; echo after-tput-reset\r"),
                     (2.0, b"setterm --reset; echo after-setterm-reset\r"),
                     (0.5, b"exit\r")]),
}
LINUX = {"linux_console", "linux_reset"}


def record(argv: list[str], keys: list[tuple[float, bytes]], columns: int = 80, lines: int = 25,
           term: str = "xterm-256color") -> bytes:
    pid, fd = pty.fork()
    if pid == 0:
        os.environ.update(TERM=term, LANG="C.UTF-8", LC_ALL="C.UTF-8", COLUMNS=str(columns),
                          LINES=str(lines), HOME="/tmp")
        os.execvp(argv[0], argv)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    output = bytearray()
    pending = list(keys)
    deadline = time.monotonic() + (pending[0][0] if pending else 0)
    while True:
        timeout = max(0.0, deadline - time.monotonic()) if pending else 1.0
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        elif pending:
            os.write(fd, pending.pop(0)[1])
            deadline = time.monotonic() + (pending[0][0] if pending else 0)
        else:
            break
    os.close(fd)
    os.waitpid(pid, 0)
    return bytes(output)


def main(names: list[str]) -> None:
    for name in names or list(SESSIONS):
        argv, keys = SESSIONS[name]
        data = record(argv, keys, term="linux" if name in LINUX else "xterm-256color")
        (HERE / f"{name}.bin").write_bytes(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main(sys.argv[1:])
