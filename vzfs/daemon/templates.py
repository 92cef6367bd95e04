"""Rootfs templates: building the busybox template once, and filling a domain's rootfs from it."""

import errno
import os
import shutil
import subprocess

from ..base.errors import VzfsError

BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox", "/usr/lib/busybox-static/busybox")

INITTAB = """\
# busybox init(8) table written by vzfs.
::sysinit:/bin/mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
::respawn:-/bin/sh
::ctrlaltdel:/sbin/reboot
::shutdown:/bin/sync
"""

PROFILE = """\
export PS1='\\h:\\w\\$ '
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
"""

FILES = {
    "etc/inittab": INITTAB,
    "etc/profile": PROFILE,
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/shadow": "root::1::::::\nnobody:*:1::::::\n",
    "etc/group": "root:x:0:\ntty:x:5:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "etc/hostname": "localhost\n",
}
DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root",
        "var/log", "var/run", "run", "home", "mnt")


def find_busybox() -> str:
    for path in BUSYBOX_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise VzfsError(errno.ENOENT, "cannot build the busybox template: no busybox binary "
                                  f"(looked for {', '.join(BUSYBOX_CANDIDATES)}; install busybox-static)")


def available(state_dir: str) -> list[str]:
    """Template names this host offers."""
    try:
        find_busybox()
    except VzfsError:
        return []
    return ["busybox"]


def template_dir(state_dir: str, name: str) -> str:
    return os.path.join(state_dir, "templates", name)


def ensure(state_dir: str, name: str) -> str:
    """Build template *name* under the state dir unless it is there; return its path."""
    if name not in ("busybox",):
        raise VzfsError(errno.ENOENT, f"there is no rootfs template {name!r} "
                                      f"(templates: {', '.join(available(state_dir)) or 'none'})")
    path = template_dir(state_dir, name)
    if os.path.isdir(path):
        return path
    busybox = find_busybox()
    tmp = path + ".new"
    shutil.rmtree(tmp, ignore_errors=True)
    for d in DIRS:
        os.makedirs(os.path.join(tmp, d), exist_ok=True)
    os.chmod(os.path.join(tmp, "tmp"), 0o1777)
    os.chmod(os.path.join(tmp, "root"), 0o700)
    shutil.copy2(busybox, os.path.join(tmp, "bin", "busybox"))
    listing = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        link = os.path.join(tmp, applet)
        if applet == "bin/busybox" or os.path.lexists(link):
            continue
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink("/bin/busybox", link)
    if not os.path.lexists(os.path.join(tmp, "sbin", "init")):
        os.symlink("/bin/busybox", os.path.join(tmp, "sbin", "init"))
    for rel, text in FILES.items():
        with open(os.path.join(tmp, rel), "w") as f:
            f.write(text)
    os.chmod(os.path.join(tmp, "etc", "shadow"), 0o600)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.rename(tmp, path)
    return path


def fill(state_dir: str, template: str, rootfs: str, hostname: str) -> None:
    """Copy the template into an empty (or missing) rootfs; a non-empty rootfs is left alone."""
    if os.path.isdir(rootfs) and os.listdir(rootfs):
        return
    src = ensure(state_dir, template)
    tmp = rootfs.rstrip("/") + ".vzfs-new"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, symlinks=True)
    with open(os.path.join(tmp, "etc", "hostname"), "w") as f:
        f.write(hostname + "\n")
    if os.path.isdir(rootfs):
        os.rmdir(rootfs)
    os.makedirs(os.path.dirname(rootfs.rstrip("/")), exist_ok=True)
    os.rename(tmp, rootfs)
