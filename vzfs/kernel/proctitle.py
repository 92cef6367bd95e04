"""What `ps`, `top` and `pgrep -f` call vzfs's processes, as PostgreSQL and OpenSSH name theirs.

The title (`vzfs: controller web1`) replaces the command line that ps shows — without
it every vzfs process is `python -m vzfs mount /run/vzfs` — and the kernel's comm
(proc(5), 15 bytes, what `top` and `ps -o comm` show) gets a short form of it.
"""

import setproctitle

from .syscalls import set_comm


def name(title: str, comm: str) -> None:
    """Call this process *title* (`vzfs: ROLE WHAT`) and its comm *comm* (cut to 15 bytes)."""
    setproctitle.setproctitle(title)
    # After setproctitle, which may set the comm from the title itself.
    set_comm(comm)
