"""Mounts on real domains: configured at start, added and removed live, options enforced,
escapes refused, and the config kept across daemon and domain restarts."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.system import VZFS, Instance, wait_for
from tests.test_console import started_shell


def root(inst: Instance, name: str = "demo") -> Path:
    """The container's root as it sees it (its mounts included), to read from the host."""
    return Path(f"/proc/{inst.read(name, 'pid').strip()}/root")


def disk_root(inst: Instance, name: str = "demo") -> Path:
    """The root's directory on the host's disk, to write to from the host: through the
    container's view (an idmapped mount) the host's root is nobody and may not create."""
    return inst.state / "private" / inst.read(name, "id").strip()


def domain_root_id(inst: Instance, name: str = "demo") -> int:
    """The host uid of the domain's root (its `idmap` block's first id)."""
    return int(inst.read(name, "idmap").split()[1])


def enter(inst: Instance, *argv: str, name: str = "demo") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*VZFS, "enter", "--mount", str(inst.mnt), name, "--", *argv],
                          capture_output=True, text=True, timeout=30)


def write_mounts(inst: Instance, text: str, name: str = "demo") -> None:
    inst.write(name, "mounts", text)


def refused(inst: Instance, text: str, code: int, name: str = "demo") -> str:
    """Write a mounts command that must fail with *code*; the sentence in `error`."""
    with pytest.raises(OSError) as info:
        write_mounts(inst, text, name)
    assert info.value.errno == code, info.value
    sentence = inst.read(name, "error")
    assert sentence.startswith(f"cannot change the mounts of domain {name}: "), sentence
    return sentence


def host_mounts() -> list[str]:
    return Path("/proc/self/mountinfo").read_text().splitlines()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_text("from the host\n")
    return src


def test_configured_mounts_are_there_before_init_and_ro_holds_for_root(
        instance: Instance, source: Path, tmp_path: Path) -> None:
    (tmp_path / "one-file").write_text("a file\n")
    instance.define("demo", f'[[mount]]\nsource = "{source}"\ntarget = "/data"\noptions = "ro"\n'
                            f'[[mount]]\nsource = "{tmp_path / "one-file"}"\ntarget = "/etc/extra.conf"\n'
                            f'[[mount]]\nsource = "tmpfs"\ntarget = "/scratch"\noptions = "size=8M"\n')
    instance.write("demo", "state", "start")
    r = root(instance)
    assert (r / "data" / "hello").read_text() == "from the host\n"
    assert (r / "etc" / "extra.conf").read_text() == "a file\n"
    st = os.statvfs(r / "scratch")
    assert st.f_blocks * st.f_frsize == 8 << 20
    result = enter(instance, "sh", "-c", "echo x > /data/new")
    assert result.returncode != 0 and "Read-only file system" in result.stderr
    assert not (source / "new").exists()
    assert instance.read("demo", "mounts") == (
        f"{source} /data ro\n{tmp_path / 'one-file'} /etc/extra.conf defaults\n"
        "tmpfs /scratch size=8M\n")


def test_a_missing_configured_source_fails_the_start_with_enoent(instance: Instance) -> None:
    instance.define("demo", '[[mount]]\nsource = "/nonexistent/src"\ntarget = "/data"\n')
    with pytest.raises(OSError) as info:
        instance.write("demo", "state", "start")
    assert info.value.errno == errno.ENOENT
    assert "/nonexistent/src" in instance.read("demo", "error")
    assert instance.read("demo", "state") == "stopped\n"


def test_live_add_and_del_while_the_container_runs(instance: Instance, source: Path) -> None:
    started_shell(instance)
    pid = instance.read("demo", "pid")
    before = host_mounts()
    write_mounts(instance, f"add {source} /srv/live nosuid,noexec")
    r = root(instance)
    assert (r / "srv" / "live" / "hello").read_text() == "from the host\n"
    assert enter(instance, "cat", "/srv/live/hello").stdout == "from the host\n"
    assert instance.read("demo", "mounts") == f"{source} /srv/live nosuid,noexec\n"
    assert f'source = "{source}"' in instance.read("demo", "config")
    info = [line for line in Path(f"/proc/{pid.strip()}/mountinfo").read_text().splitlines()
            if " /srv/live " in line]
    assert len(info) == 1 and "nosuid" in info[0] and "noexec" in info[0]
    # noexec holds: a copy of busybox there cannot run.
    (source / "bb").write_bytes(Path("/bin/busybox").read_bytes())
    (source / "bb").chmod(0o755)
    assert enter(instance, "/srv/live/bb", "true").returncode == 126
    assert host_mounts() == before                      # nothing appeared on the host
    write_mounts(instance, "del /srv/live")
    assert not (r / "srv" / "live" / "hello").exists()
    assert instance.read("demo", "mounts") == ""
    assert "[[mount]]" not in instance.read("demo", "config")
    assert instance.read("demo", "pid") == pid           # the container never stopped


def test_nosuid_holds_for_a_setuid_program(instance: Instance, source: Path, tmp_path: Path) -> None:
    """A setuid-root program run by an unprivileged user inside gains nothing on a nosuid
    mount, and does on a mount without it (so the test can tell)."""
    # One static program (the busybox root has no libc): with an argument it drops to
    # uid 65534 and execs it; without, it prints its effective uid.
    prog = tmp_path / "euid.c"
    prog.write_text('#include <stdio.h>\n#include <unistd.h>\n#include <grp.h>\n'
                    'int main(int argc, char **argv) {\n'
                    '  if (argc > 1) { setgroups(0, 0); setgid(65534); setuid(65534);\n'
                    '    execv(argv[1], argv + 1); return 127; }\n'
                    '  printf("%d\\n", (int)geteuid()); return 0; }\n')
    subprocess.run(["gcc", "-static", "-o", str(source / "euid"), str(prog)], check=True)
    started_shell(instance)
    # Owned by the domain's root (idmap=shift shows it as root inside; the host's root
    # would be nobody there).
    os.chown(source / "euid", domain_root_id(instance), domain_root_id(instance))
    (source / "euid").chmod(0o4755)
    write_mounts(instance, f"add {source} /suid")
    write_mounts(instance, f"add {source} /nosuid nosuid")

    def euid(where: str) -> str:
        # Run as root, the program at /suid drops to 65534 (setuid, not seteuid: the
        # set-user-ID bit of the exec'd copy is the only way back) and execs the copy.
        r = enter(instance, "/suid/euid", f"/{where}/euid")
        assert r.returncode == 0, r.stderr
        return r.stdout.strip()

    assert euid("suid") == "0"
    assert euid("nosuid") == "65534"


def test_escapes_are_refused_and_nothing_is_mounted_on_the_host(
        instance: Instance, source: Path, tmp_path: Path) -> None:
    started_shell(instance)
    outside = tmp_path / "outside"
    outside.mkdir()
    r = disk_root(instance)
    os.symlink(str(outside), r / "abs-link")               # absolute: means the container's /…
    os.symlink("../../../../../../../..", r / "rel-link")  # climbs as far as it can
    before = host_mounts()
    config = instance.read("demo", "config")
    for target in ("/../../../../tmp/x", "/abs-link", "/abs-link/deeper", "/rel-link/tmp/y"):
        sentence = refused(instance, f"add {source} {target}", errno.EPERM)
        assert "outside the container's root" in sentence, sentence
    assert host_mounts() == before
    assert list(outside.iterdir()) == []
    assert instance.read("demo", "config") == config       # nothing kept on a refusal
    assert instance.read("demo", "mounts") == ""


def test_refusals_say_why_and_change_nothing(instance: Instance, source: Path) -> None:
    started_shell(instance)
    write_mounts(instance, f"add {source} /data")
    config = instance.read("demo", "config")
    assert "does not exist" in refused(instance, "add /nonexistent/src /other", errno.ENOENT)
    assert "unknown mount option 'sticky'" in refused(instance, f"add {source} /o sticky", errno.EINVAL)
    assert "already one of its mounts" in refused(instance, f"add {source} /data", errno.EEXIST)
    assert "not one of its mounts" in refused(instance, "del /nothere", errno.ENOENT)
    refused(instance, "mount it please", errno.EINVAL)
    # A busy target: a process inside has its cwd there.
    holder = subprocess.Popen([*VZFS, "enter", "--mount", str(instance.mnt), "demo", "--",
                               "sh", "-c", "cd /data && sleep 30"])
    try:
        wait_for(lambda: any(os.readlink(f"/proc/{p}/cwd").endswith("/data")
                             for p in _cgroup_pids(instance) if _readable(p)),
                 what="a process inside with its cwd in /data")
        assert "busy" in refused(instance, "del /data", errno.EBUSY)
        assert (root(instance) / "data" / "hello").exists()
    finally:
        holder.kill()
        holder.wait()
    assert instance.read("demo", "config") == config
    assert instance.read("demo", "mounts") == f"{source} /data defaults\n"


def _cgroup_pids(inst: Instance) -> list[int]:
    pid = inst.read("demo", "pid").strip()
    cg = Path(f"/proc/{pid}/cgroup").read_text().strip().splitlines()[-1].split(":", 2)[2]
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/pids"):
        procs = Path(base + cg) / "cgroup.procs"
        if procs.exists():
            return [int(p) for p in procs.read_text().split()]
    return []


def _readable(pid: int) -> bool:
    try:
        os.readlink(f"/proc/{pid}/cwd")
        return True
    except OSError:
        return False


def test_a_live_add_survives_daemon_and_domain_restarts(instance: Instance, source: Path) -> None:
    started_shell(instance)
    write_mounts(instance, f"add {source} /data ro")
    instance.kill_daemon()
    instance.mount()
    assert instance.read("demo", "state") == "running\n"
    assert instance.read("demo", "mounts") == f"{source} /data ro\n"
    instance.write("demo", "state", "kill")
    instance.write("demo", "state", "start")
    assert (root(instance) / "data" / "hello").read_text() == "from the host\n"
    assert instance.read("demo", "mounts") == f"{source} /data ro\n"


def test_on_a_stopped_domain_only_the_config_changes(instance: Instance, source: Path) -> None:
    instance.define("demo")
    write_mounts(instance, f"add {source} /data")
    assert instance.read("demo", "mounts") == f"{source} /data defaults\n"
    write_mounts(instance, "add tmpfs /scratch size=16M,mode=1777")
    write_mounts(instance, "del /data")
    assert instance.read("demo", "mounts") == "tmpfs /scratch size=16M,mode=1777\n"
    instance.write("demo", "state", "start")
    st = os.statvfs(root(instance) / "scratch")
    assert st.f_blocks * st.f_frsize == 16 << 20
    assert oct(os.stat(root(instance) / "scratch").st_mode & 0o7777) == "0o1777"


def test_mounts_json_records_the_live_external_mounts(instance: Instance, source: Path) -> None:
    import json
    started_shell(instance)
    write_mounts(instance, f"add {source} /data ro,rbind")
    record = json.loads((instance.state / "domains" / "demo" / "mounts.json").read_text())
    assert record == [{"source": str(source), "target": "/data", "options": ["ro", "rbind"]}]
    write_mounts(instance, "del /data")
    assert json.loads((instance.state / "domains" / "demo" / "mounts.json").read_text()) == []
