"""`vzfs enter`: a command inside a running domain, its exit status passed through."""

import os
import subprocess
from pathlib import Path

from tests.system import VZFS, Instance


def enter(inst: Instance, name: str, *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(VZFS + ["enter", "--mount", str(inst.mnt), name, "--", *argv],
                          capture_output=True, text=True, input=stdin, timeout=30)


def test_exit_status_is_passed_through(instance: Instance) -> None:
    instance.define("demo")
    instance.write("demo", "state", "start")
    assert enter(instance, "demo", "sh", "-c", "exit 7").returncode == 7
    assert enter(instance, "demo", "true").returncode == 0
    assert enter(instance, "demo", "sh", "-c", "kill -TERM $$").returncode == 128 + 15


def test_sees_the_containers_hostname_pid_namespace_root_and_cgroup(instance: Instance) -> None:
    instance.define("demo", 'hostname = "inside-demo"\n')
    instance.write("demo", "state", "start")
    init = int(instance.read("demo", "pid"))
    r = enter(instance, "demo", "sh", "-c",
              "hostname; readlink /proc/self/ns/pid; readlink /proc/self/ns/mnt; "
              "cat /proc/1/cmdline | tr '\\0' ' '; echo; ls /bin/busybox; cat /proc/self/cgroup")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "inside-demo"
    assert lines[1] == os.readlink(f"/proc/{init}/ns/pid")
    assert lines[2] == os.readlink(f"/proc/{init}/ns/mnt")
    assert lines[3].split()[0] in ("init", "/sbin/init")   # busybox init rewrites its argv
    assert lines[4] == "/bin/busybox"
    # cgroup namespace: the domain's cgroup is the root inside
    assert all(line.endswith(":/") for line in lines[5:] if line)
    host_cg = Path(f"/proc/{init}/cgroup").read_text()
    assert "/vzfs/" in host_cg


def test_stdin_and_default_shell(instance: Instance) -> None:
    instance.define("demo")
    instance.write("demo", "state", "start")
    r = subprocess.run(VZFS + ["enter", "--mount", str(instance.mnt), "demo"], input="echo $((6*7)); exit 5\n",
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 5
    assert "42" in r.stdout


def test_errors(instance: Instance) -> None:
    instance.define("demo")
    r = enter(instance, "demo", "true")
    assert r.returncode == 125 and "cannot enter domain demo: it is not running" in r.stderr
    r = enter(instance, "nosuch", "true")
    assert r.returncode == 125 and "there is no such domain" in r.stderr
    instance.write("demo", "state", "start")
    r = enter(instance, "demo", "/no/such/cmd")
    assert r.returncode == 127
    assert "cannot run /no/such/cmd in domain demo: No such file or directory" in r.stderr
    r = enter(instance, "demo", "/etc/passwd")
    assert r.returncode == 126


def test_command_gets_default_signal_dispositions(instance: Instance) -> None:
    # Python ignores SIGPIPE; `yes | head` inside must still end by SIGPIPE.
    instance.define("demo")
    instance.write("demo", "state", "start")
    r = enter(instance, "demo", "sh", "-c", "grep SigIgn /proc/self/status")
    ignored = int(r.stdout.split()[1], 16)
    assert not ignored & (1 << (13 - 1)), "SIGPIPE is not ignored"
    assert not ignored & (1 << (25 - 1)), "SIGXFSZ is not ignored"
