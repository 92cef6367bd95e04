"""Every vzfs process says what it is, in its title (ps, pgrep -f) and its comm (top)."""

import subprocess
from pathlib import Path

from tests.system import Instance, wait_for


def title(pid: int) -> str:
    """*pid*'s title; empty once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().rstrip("\n")


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def by_title(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if title(int(entry.name)) == text:
                    found.append(int(entry.name))
            except (OSError, IndexError):
                pass
    return found


def test_daemon_zygote_controller_and_vnc_are_named(instance: Instance) -> None:
    mnt = str(instance.mnt)
    daemon = instance.daemon_pid()
    assert title(daemon) == f"vzfs: daemon {mnt}"
    assert comm(daemon) == "vzfs-daemon"
    zygotes = [p for p in children(daemon) if title(p) == f"vzfs: zygote {mnt}"]
    assert len(zygotes) == 1, [title(p) for p in children(daemon)]
    assert comm(zygotes[0]) == "vzfs-zygote"
    wait_for(lambda: any(title(p) == f"vzfs: spare {mnt}" for p in children(zygotes[0])),
             what="the zygote's spare")

    instance.quick("web1")
    instance.write("web1", "state", "start")
    # The keeper is init's parent; the controller is the keeper's child.
    init = int(instance.read("web1", "pid"))
    keeper = int(Path(f"/proc/{init}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert title(keeper) == "vzfs: keeper web1"
    assert comm(keeper) == "vzfs-keep:web1"
    # (looked for among the keeper's children: another instance may run a web1 too)
    wait_for(lambda: [p for p in children(keeper) if title(p) == "vzfs: controller web1"],
             what="the controller")
    controllers = [p for p in children(keeper) if title(p) == "vzfs: controller web1"]
    assert len(controllers) == 1
    assert comm(controllers[0]) == "vzfs:web1"
    # The spawner was forked by the spare before the request, so it is the keeper's
    # child; the VNC server is the spawner's.
    spawners = [p for p in children(keeper) if title(p) == "vzfs: vnc spawner"]
    assert spawners and comm(spawners[0]) == "vzfs-vncspawn"
    wait_for(lambda: [p for p in children(spawners[0]) if title(p) == "vzfs: vnc web1"],
             what="the VNC server")
    [vnc] = [p for p in children(spawners[0]) if title(p) == "vzfs: vnc web1"]
    assert comm(vnc) == "vzfs-vnc:web1"
    # a long name: the comm is cut to the kernel's 15 bytes, the title is whole
    instance.quick("a-rather-long-domain-name")
    instance.write("a-rather-long-domain-name", "state", "start")
    wait_for(lambda: len(by_title("vzfs: controller a-rather-long-domain-name")) == 1,
             what="the controller")
    [ctl] = by_title("vzfs: controller a-rather-long-domain-name")
    assert comm(ctl) == "vzfs:a-rather-l"
    [keeper2] = by_title("vzfs: keeper a-rather-long-domain-name")
    assert comm(keeper2) == "vzfs-keep:a-rat"
    # pgrep -f finds them by their titles
    out = subprocess.run(["pgrep", "-f", "^vzfs: controller web1$"], capture_output=True,
                         text=True, check=False).stdout.split()
    assert controllers[0] in [int(p) for p in out]
