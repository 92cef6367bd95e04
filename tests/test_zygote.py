"""The zygote dies (SIGKILL), the daemon starts another, and no start fails for it:
one that raced with the death is retried once on the new zygote (issue 16)."""

import os
import signal
import time
from pathlib import Path

from tests.system import Instance, wait_for


def title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def zygote_pid(inst: Instance) -> int:
    daemon = inst.daemon_pid()
    want = f"vzfs: zygote {inst.mnt}"
    found: list[int] = []

    def look() -> bool:
        found.clear()
        for task in Path(f"/proc/{daemon}/task").iterdir():
            found.extend(int(c) for c in (task / "children").read_text().split()
                         if title(int(c)) == want)
        return len(found) == 1
    wait_for(look, timeout=20, what="one zygote, the daemon's child")
    return found[0]


def test_a_killed_zygote_is_replaced_and_starts_go_on(instance: Instance) -> None:
    instance.quick("web1")
    for round_ in range(6):
        old = zygote_pid(instance)
        os.kill(old, signal.SIGKILL)
        if round_ % 2:
            # let the daemon notice first: the start goes to the new zygote
            wait_for(lambda old=old: zygote_pid(instance) != old, timeout=20,
                     what="a new zygote")
        # at once: the start races with the death (an orphaned spare, or a retry)
        instance.write("web1", "state", "start")
        assert instance.read("web1", "state") == "running\n", instance.read("web1", "error")
        assert instance.read("web1", "pid") != ""
        instance.write("web1", "state", "kill")
        assert instance.read("web1", "state") == "stopped\n"
    new = zygote_pid(instance)
    assert new != old
    # the new zygote keeps a spare too, and starts go on
    wait_for(lambda: any(title(int(c)) == f"vzfs: spare {instance.mnt}"
                         for c in Path(f"/proc/{new}/task/{new}/children").read_text().split()),
             timeout=20, what="the new zygote's spare")
    t = time.monotonic()
    instance.write("web1", "state", "start")
    assert instance.read("web1", "state") == "running\n"
    assert time.monotonic() - t < 10
