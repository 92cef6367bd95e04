"""Suspend to disk and back, with CRIU as the engine.

Theory of operation
-------------------
A checkpoint is a directory of CRIU images plus `vzfs.json`, the few facts the
restore needs that CRIU does not keep: which terminal was the console, which
mounts came from the host, the screen's size and the VNC ports. The dump writes
into `checkpoint.new/`; only when CRIU succeeded is `vzfs.json` written and the
directory renamed to `checkpoint/`, so a `checkpoint/` with a `vzfs.json` is
always complete and is what makes a domain `suspended` (also for a daemon that
starts later). A failed dump leaves no images behind; a failed restore leaves
them in place to be tried again.

What CRIU must be told (FACTS.md, criu(8)):

* The console is a pty of the host, held by the controller, outside the dump:
  `--external tty[RDEV:DEV]` on dump, and on restore the new pty's slave is handed
  in with `--inherit-fd fd[N]:tty[RDEV:DEV]` under the old key. Its bind mounts
  on /dev/console and /dev/tty1 are external mounts the same way.
* `/dev/tty` (5:0) is declared external too, and restored as the console. CRIU
  4 refuses to dump a `/dev/tty` opened by a task whose controlling terminal is an
  external tty ("ctty inheritance detected … no PTY peer"), and every interactive
  shell on the console holds one. Inside a domain the console is the terminal such
  a task has, so after a restore its /dev/tty is the console.
* Bind mounts from the host (the domain's `mounts`) are external: dumped as
  `mnt[TARGET]:mN`, restored from `mnt[mN]:SOURCE`. tmpfs mounts are internal
  (CRIU saves their contents). So are the host's device nodes bound into /dev and
  over the masked /proc files (`host_binds`, found in the container's mountinfo
  at dump time): `mnt[TARGET]:hN`, restored from the same node of the host's /dev.
* An unprivileged domain's root is an idmapped mount (kernel.userns). CRIU
  restores the user namespace from its images and binds `--root` as the root: the
  restore runs in a mount namespace of its own where the domain's root directory
  is covered by an idmapped clone of itself with the domain's map, and each host
  source of its mounts by the idmapped mount it had (kernel.mounts), so what is
  restored is seen through the same maps as what was dumped. A lazy restore (a
  migration's) makes a userfaultfd in each restored task, which a user namespace
  may do only while vm.unprivileged_userfaultfd is 1: kernel.userns opens that
  window for the restore alone.
* Cgroups are vzfs's: `--manage-cgroups=ignore`, and the restore runs CRIU from
  inside the domain's cgroup so that the restored tree is born there. A running
  tree is stopped by CRIU's ptrace seize; a paused one is handed over frozen
  (`--freeze-cgroup`), and stays paused if the dump fails.
* `--restore-sibling --restore-detached`: the restored init becomes a child of
  CRIU's parent, the controller, which then supervises it like one it started.
"""

import contextlib
import dataclasses
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence

from ..base.atomicfile import atomic_write
from ..kernel import idshift, mountinfo, namespaces, syscalls, userns
from ..kernel import mounts as kmounts
from ..kernel.cdefs import AT_FDCWD, CLONE_NEWNS, MOVE_MOUNT_F_EMPTY_PATH, MS_PRIVATE, MS_REC
from ..model.idmap import IdMap
from ..model.mountspec import MountSpec

IMAGES = "checkpoint"
PARTIAL = "checkpoint.new"
SPENT = "checkpoint.old"
META = "vzfs.json"
LOG = "checkpoint.log"
RECORD = "checkpoint.json"
PIDFILE = "restored.pid"
STAGE_DIR = "/tmp"          # where a restore stages mount sources (a private tmpfs)

CONSOLE_MOUNTS = ("/dev/console", "/dev/tty1")
COMMON = ("-v4", "--manage-cgroups=ignore", "--tcp-established", "--file-locks")

# Lines every run logs as "Error" that say nothing about why a run failed: probes
# of kernel features and of tools that are optional (iptables; nftables is used).
_NOISE = re.compile(r"RLIMIT_NOFILE|execvp\(\"(ip6?tables|iptables-legacy|ip6tables-legacy)|"
                    r"tables(-legacy)?-(save|restore) -V failed|Unable to create tun|"
                    r"exited, status=1$|Can't keep kdat cache")
_ERROR = re.compile(r"Error \([^)]*\): (.*)$")


class CheckpointError(OSError):
    """CRIU refused; `sentence` says why in words, from its log."""


@dataclasses.dataclass(frozen=True)
class Meta:
    """What the restore needs besides CRIU's images (stored as META)."""
    console_key: str            # tty[RDEV:DEV] of the console at dump time
    devtty_key: str             # tty[RDEV:DEV] of the container's /dev/tty ("" if it had none)
    mounts: tuple[MountSpec, ...]
    columns: int
    lines: int
    vnc_prefer: dict[str, int]
    dumped_at: float
    # "net[INODE]:KEY" when the network namespace was left out of the dump (a plain
    # one: see plain_netns) and the restore is to bring a fresh one as KEY; "" when
    # CRIU dumped it.
    netns: str = ""
    # (target, host source) of the host's device nodes bound into the container.
    host_binds: tuple[tuple[str, str], ...] = ()

    @property
    def netns_key(self) -> str:
        return self.netns.rpartition(":")[2]

    def to_json(self) -> str:
        return json.dumps({
            "console_key": self.console_key, "devtty_key": self.devtty_key, "netns": self.netns,
            "mounts": [m.to_json() for m in self.mounts],
            "columns": self.columns, "lines": self.lines, "vnc_prefer": self.vnc_prefer,
            "dumped_at": self.dumped_at, "host_binds": [list(b) for b in self.host_binds]})

    @classmethod
    def from_json(cls, text: str) -> "Meta":
        d = json.loads(text)
        return cls(str(d["console_key"]), str(d["devtty_key"]),
                   tuple(MountSpec.from_json(m) for m in d["mounts"]),
                   int(d["columns"]), int(d["lines"]),
                   {str(k): int(v) for k, v in d.get("vnc_prefer", {}).items()},
                   float(d["dumped_at"]), str(d.get("netns", "")),
                   tuple((str(t), str(src)) for t, src in d.get("host_binds", [])))


def tty_key(st: os.stat_result) -> str:
    return f"tty[{st.st_rdev:x}:{st.st_dev:x}]"


def has_checkpoint(domain_dir: str) -> bool:
    return os.path.exists(os.path.join(domain_dir, IMAGES, META))


def host_binds(pid: int) -> tuple[tuple[str, str], ...]:
    """(target, host source) of every node of the host's devtmpfs bound into *pid*'s
    mount namespace (kernel.rootfs: /dev's nodes, the masked /proc files)."""
    return tuple((entry.mount_point, "/dev" + entry.root) for entry in mountinfo.read(pid)
                 if entry.fstype == "devtmpfs" and entry.mount_point not in CONSOLE_MOUNTS)


def _external_mounts(mounts: Sequence[MountSpec]) -> list[tuple[str, MountSpec]]:
    """(key, mount) for every mount that comes from the host (binds, not tmpfs)."""
    return [(f"m{i}", m) for i, m in enumerate(mounts) if not m.is_tmpfs]


def dump_args(criu: str, pid: int, images: str, log: str, root: str, freezer: str | None,
              meta: Meta) -> list[str]:
    # A network namespace left out of the dump needs no lock: nothing outside the
    # frozen tree can reach a plain one.
    lock = "skip" if meta.netns else "nftables"
    args = [criu, "dump", "-t", str(pid), "-D", images, "-o", log, "--root", root,
            "--network-lock", lock, *COMMON, "--external", meta.console_key]
    if meta.netns:
        args += ["--external", meta.netns]
    if meta.devtty_key:
        args += ["--external", meta.devtty_key]
    if freezer is not None:
        args += ["--freeze-cgroup", freezer]
    for target in CONSOLE_MOUNTS:
        args += ["--external", f"mnt[{target}]:{os.path.basename(target)}"]
    for key, m in _external_mounts(meta.mounts):
        args += ["--external", f"mnt[{m.target}]:{key}"]
    for i, (target, _) in enumerate(meta.host_binds):
        args += ["--external", f"mnt[{target}]:h{i}"]
    return args


def lazy_dump_args(criu: str, pid: int, images: str, log: str, root: str, meta: Meta,
                   ps_fd: int, status_fd: int) -> list[str]:
    """A migration's dump: everything but the memory into *images*, then the memory
    served through the connected socket *ps_fd* as the target's lazy-pages daemon asks
    for it (post-copy); *status_fd* gets a byte when the images are complete."""
    return dump_args(criu, pid, images, log, root, None, meta) + [
        "--lazy-pages", "--ps-socket", str(ps_fd), "--status-fd", str(status_fd)]


def restore_args(criu: str, images: str, log: str, root: str, pidfile: str, meta: Meta,
                 console_fd: int, devtty_fd: int, console_path: str,
                 lazy: bool = False, netns_fd: int = -1,
                 sources: dict[str, str] | None = None) -> list[str]:
    """*sources*: where CRIU finds an external mount's source instead of its own path
    (an unprivileged domain's staged idmapped mounts)."""
    args = [criu, "restore", "-D", images, "-o", log, "--root", root, "--pidfile", pidfile,
            "--restore-detached", "--restore-sibling", *COMMON,
            *(["--lazy-pages"] if lazy else []),
            # One fd per key: CRIU moves each inherited fd away as it takes it.
            "--inherit-fd", f"fd[{console_fd}]:{meta.console_key}"]
    if meta.devtty_key:
        args += ["--inherit-fd", f"fd[{devtty_fd}]:{meta.devtty_key}"]
    if meta.netns:
        args += ["--inherit-fd", f"fd[{netns_fd}]:{meta.netns_key}"]
    for target in CONSOLE_MOUNTS:
        args += ["--external", f"mnt[{os.path.basename(target)}]:{console_path}"]
    for key, m in _external_mounts(meta.mounts):
        args += ["--external", f"mnt[{key}]:{(sources or {}).get(key, m.source)}"]
    for i, (_, source) in enumerate(meta.host_binds):
        args += ["--external", f"mnt[h{i}]:{source}"]
    return args


NETNS_KEY = "vzfs-net"


def plain_netns(pid: int) -> str:
    """"net[INODE]:vzfs-net" when the network namespace of *pid* holds nothing a fresh
    one with `lo` up lacks — only `lo`, only loopback addresses, no routes of its own,
    no nftables rules — so a restore may bring a fresh one instead of CRIU dumping it
    (which execs ip and nft: about 60 ms of frozen time here); else ""."""
    proc = f"/proc/{pid}/net"
    try:
        with open(f"{proc}/dev") as f:
            links = [line.split(":")[0].strip() for line in f.readlines()[2:]]
        with open(f"{proc}/route") as f:
            routes = f.readlines()[1:]
        with open(f"{proc}/if_inet6") as f:
            v6 = [line.split()[0] for line in f]
        with open(f"{proc}/fib_trie") as f:
            trie = f.read().split()
        inode = os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return ""
    v4 = [trie[i - 3] for i, word in enumerate(trie) if word == "LOCAL" and i >= 3]
    if links != ["lo"] or routes or any(a != "0" * 31 + "1" for a in v6) \
            or any(not a.startswith("127.") for a in v4):
        return ""
    if shutil.which("nft"):
        try:
            rules = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "nft", "list",
                                    "ruleset"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        if rules.returncode != 0 or rules.stdout.strip():
            return ""
    return f"net[{inode}]:{NETNS_KEY}"


def reasons(log: str, limit: int = 3) -> str:
    """The last few errors CRIU logged, in its words, without the noise every run has."""
    found: list[str] = []
    try:
        with open(log, errors="replace") as f:
            for line in f:
                m = _ERROR.search(line.rstrip("\n"))
                if m and not _NOISE.search(line):
                    text = m.group(1).strip().rstrip(":")
                    if text and text not in found:
                        found.append(text)
    except OSError:
        return "its log could not be read"
    specific = [t for t in found if not re.fullmatch(r"(Dumping|Restoring) FAILED\.?", t)]
    chosen = (specific or found)[-limit:]
    return "; ".join(chosen) if chosen else "it gave no reason in its log"


# -- CRIU's statistics images (stats-dump, stats-restore) -------------------------
# A service image: two magics, then one size-prefixed protobuf message
# (images/stats.proto: StatsEntry{dump=1: DumpStatsEntry, restore=2: RestoreStatsEntry}).
# Only varint fields and one level of nesting are used, so a few lines of wire
# format reading do; times are in microseconds.
DUMP_FIELDS = {1: "freezing_time", 2: "frozen_time", 3: "memdump_time", 4: "memwrite_time",
               5: "pages_scanned", 7: "pages_written"}
RESTORE_FIELDS = {3: "forking_time", 4: "restore_time", 5: "pages_restored"}


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def _fields(buf: bytes) -> dict[int, int | bytes]:
    out: dict[int, int | bytes] = {}
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            out[number], i = _varint(buf, i)
        elif wire == 2:
            length, i = _varint(buf, i)
            out[number] = buf[i:i + length]
            i += length
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            raise ValueError(f"unexpected wire type {wire}")
    return out


def read_stats(path: str) -> dict[str, int]:
    """The figures of a stats-dump or stats-restore image ({} when there is none)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return {}
    if len(data) < 12:
        return {}
    size = int.from_bytes(data[8:12], "little")
    try:
        entry = _fields(data[12:12 + size])
        out: dict[str, int] = {}
        for number, names in ((1, DUMP_FIELDS), (2, RESTORE_FIELDS)):
            sub = entry.get(number)
            if isinstance(sub, bytes):
                for k, v in _fields(sub).items():
                    if k in names and isinstance(v, int):
                        out[names[k]] = v
        return out
    except ValueError:
        return {}


# -- running CRIU -------------------------------------------------------------------
def _run(args: list[str], log: str, cwd: str, pass_fds: Sequence[int] = (),
         preexec: Callable[[], None] | None = None) -> int:
    """Run CRIU; what it prints itself (and the tools it runs print) goes after its log."""
    proc = subprocess.run(args, cwd=cwd, pass_fds=tuple(pass_fds), preexec_fn=preexec,
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, check=False)
    if proc.stdout:
        with open(log, "ab") as f:
            f.write(b"\n--- printed by criu and the tools it ran ---\n" + proc.stdout)
    return proc.returncode


def _images_bytes(path: str) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.is_file(follow_symlinks=False):
            total += entry.stat(follow_symlinks=False).st_size
    return total


def dump(criu: str, domain_dir: str, pid: int, root: str, freezer: str | None,
         meta: Meta) -> dict[str, float]:
    """Checkpoint the tree of *pid* and end it; return the figures of the dump.

    *freezer* is the frozen cgroup of a paused domain (None: CRIU stops the tree).
    On failure the tree runs on as it was, the partial images are removed and
    CheckpointError says why."""
    partial = os.path.join(domain_dir, PARTIAL)
    log = os.path.join(domain_dir, LOG)
    shutil.rmtree(partial, ignore_errors=True)
    os.mkdir(partial, 0o700)
    try:
        os.unlink(log)
    except FileNotFoundError:
        pass
    started = time.monotonic()
    try:
        code = _run(dump_args(criu, pid, partial, log, root, freezer, meta), log, partial)
    except OSError as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(exc.errno or errno.EIO,
                              f"cannot run CRIU ({criu}): {exc.strerror or exc}") from exc
    elapsed = time.monotonic() - started
    if code != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise CheckpointError(errno.EIO, f"CRIU could not checkpoint it: {reasons(log)} "
                                         f"(its whole log is in {LOG})")
    stats = read_stats(os.path.join(partial, "stats-dump"))
    return {"dump_ms": elapsed * 1000,
            "frozen_ms": stats.get("frozen_time", 0) / 1000,
            "freezing_ms": stats.get("freezing_time", 0) / 1000,
            "memdump_ms": stats.get("memdump_time", 0) / 1000,
            "memwrite_ms": stats.get("memwrite_time", 0) / 1000,
            "pages_written": stats.get("pages_written", 0),
            "images_bytes": _images_bytes(partial)}


def commit(domain_dir: str, meta: Meta) -> None:
    """Make the dumped images the domain's checkpoint (META last, then one rename)."""
    partial = os.path.join(domain_dir, PARTIAL)
    atomic_write(os.path.join(partial, META), meta.to_json())
    final = os.path.join(domain_dir, IMAGES)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(partial, final)


def retire(domain_dir: str) -> None:
    """The domain runs from its checkpoint: it is no checkpoint any more (one rename,
    so a crash right after cannot make a stale one look current)."""
    try:
        os.rename(os.path.join(domain_dir, IMAGES), os.path.join(domain_dir, SPENT))
    except FileNotFoundError:
        pass


def discard(domain_dir: str) -> None:
    """Forget the checkpoint (META first: a half-removed directory is no checkpoint)."""
    final = os.path.join(domain_dir, IMAGES)
    try:
        os.unlink(os.path.join(final, META))
    except FileNotFoundError:
        pass
    for name in (IMAGES, SPENT, PARTIAL):
        shutil.rmtree(os.path.join(domain_dir, name), ignore_errors=True)


def read_meta(domain_dir: str, images: str | None = None) -> Meta:
    path = os.path.join(images or os.path.join(domain_dir, IMAGES), META)
    try:
        with open(path) as f:
            return Meta.from_json(f.read())
    except FileNotFoundError:
        raise CheckpointError(errno.ENOENT, "it has no checkpoint to restore") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(errno.EIO, f"its checkpoint's {META} is damaged ({exc})") from exc


def restore(criu: str, domain_dir: str, root: str, meta: Meta, console_slave: int,
            join_cgroup: Callable[[], None], images: str | None = None,
            lazy: bool = False, idmap: IdMap | None = None) -> tuple[int, dict[str, float]]:
    """Restore the checkpoint (or the *images* a migration brought, their memory
    *lazy*ly from CRIU's lazy-pages daemon) as a child of the caller; return (host pid
    of init, figures).

    CRIU runs from inside the domain's cgroup (*join_cgroup* runs in its process
    before the exec). The images stay whatever happens: the caller discards them
    once the domain runs."""
    where = (f"its whole log is in {LOG}; the checkpoint is kept" if images is None else
             "the source keeps CRIU's log of it as migration-restore.log")
    images = images or os.path.join(domain_dir, IMAGES)
    log = os.path.join(domain_dir, LOG)
    pidfile = os.path.join(domain_dir, PIDFILE)
    for path in (log, pidfile):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    for m in meta.mounts:
        if not m.is_tmpfs and not os.path.exists(m.source):
            raise CheckpointError(errno.ENOENT, f"the source {m.source} of its mount on "
                                                f"{m.target} does not exist any more")
    fds = [os.dup(console_slave), os.dup(console_slave)]
    if meta.netns:
        fds.append(namespaces.fresh_netns())
        os.set_inheritable(fds[-1], True)
    trees: list[tuple[int, str]] = []
    stage = ""
    sources: dict[str, str] = {}
    started = time.monotonic()
    try:
        prepare = join_cgroup
        if idmap is not None:
            # CRIU reads some images from inside the restored user namespace, as its
            # root: they are the domain's own memory and files, so they are its to read.
            _give(images, idmap)
            if idshift.shifted_as(root) is None:     # else its ids are shifted on disk
                trees.append((_idmapped_root(root, idmap), root))
            # CRIU binds an external mount's source from inside the user namespace
            # too, where the host's path to it may not be searchable (a 0700
            # directory): it finds the idmapped mount the domain had on a stage.
            externals = _external_mounts(meta.mounts)
            if externals:
                stage = tempfile.mkdtemp(prefix="vzfs-restore-", dir=STAGE_DIR)
                os.chmod(stage, 0o755)
            for key, m in externals:
                sources[key] = os.path.join(stage, key)
                trees.append((kmounts.prepare_source(m, idmap), sources[key]))
            prepare = _restore_prepare(join_cgroup, trees, stage)
        args = restore_args(criu, images, log, root, pidfile, meta, fds[0], fds[1],
                            os.ttyname(console_slave), lazy, fds[-1], sources)
        # A lazy restore in a user namespace needs userfaultfd's window (kernel.userns).
        window = (userns.userfaultfd_window() if lazy and idmap is not None
                  else contextlib.nullcontext())
        with window:
            code = _run(args, log, images, pass_fds=fds, preexec=prepare)
    except OSError as exc:
        raise CheckpointError(exc.errno or errno.EIO,
                              f"cannot run CRIU ({criu}): {exc.strerror or exc}") from exc
    finally:
        for fd in fds + [tree for tree, _ in trees]:
            os.close(fd)
        if stage:
            os.rmdir(stage)     # its tmpfs lived in CRIU's mount namespace only
    elapsed = time.monotonic() - started
    if code != 0:
        raise CheckpointError(errno.EIO, f"CRIU could not restore it: {reasons(log)} "
                                         f"({where})")
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError) as exc:
        raise CheckpointError(errno.EIO, f"CRIU restored it but left no pid ({exc})") from exc
    finally:
        try:
            os.unlink(pidfile)
        except FileNotFoundError:
            pass
    stats = read_stats(os.path.join(images, "stats-restore"))
    return pid, {"criu_restore_ms": elapsed * 1000,
                 "restore_time_ms": stats.get("restore_time", 0) / 1000,
                 "forking_ms": stats.get("forking_time", 0) / 1000,
                 "pages_restored": stats.get("pages_restored", 0)}


def _give(images: str, idmap: IdMap) -> None:
    # Searchable and readable by anyone too: CRIU may open an image (timens-0.img) in
    # the restored task before its user namespace has its map, with ids that are
    # neither the owner's nor the group's — the directory then needs o+x and the file
    # o+r (CRIU writes its images 0600). Only CRIU's fd of the directory reaches them:
    # the domain's directory above is root's, 0700.
    os.chown(images, idmap.uid, idmap.gid)
    os.chmod(images, 0o755)
    for entry in os.scandir(images):
        os.chown(entry.path, idmap.uid, idmap.gid, follow_symlinks=False)
        if entry.is_file(follow_symlinks=False):
            os.chmod(entry.path, 0o644)


def _idmapped_root(root: str, idmap: IdMap) -> int:
    ns = userns.make(*userns.domain_maps(idmap))
    try:
        return userns.idmapped_tree(root, ns, recursive=False)
    finally:
        os.close(ns)


def _restore_prepare(join_cgroup: Callable[[], None], trees: list[tuple[int, str]],
                     stage: str) -> Callable[[], None]:
    """CRIU's pre-exec step for an unprivileged domain (module docstring): its own mount
    namespace, the domain's root covered by its idmapped clone, and a tmpfs on *stage*
    with the idmapped mounts of its mounts' sources."""
    def prepare() -> None:
        join_cgroup()
        syscalls.unshare(CLONE_NEWNS)
        syscalls.mount(None, "/", None, MS_REC | MS_PRIVATE)
        if stage:
            syscalls.mount("tmpfs", stage, "tmpfs", 0, "mode=0755,size=16k")
        for tree, path in trees:
            if path.startswith(stage + "/") and stage:
                if stat.S_ISDIR(os.fstat(tree).st_mode):
                    os.mkdir(path)
                else:
                    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
            syscalls.move_mount(tree, "", AT_FDCWD, path, MOVE_MOUNT_F_EMPTY_PATH)
    return prepare


# The figures, in the order the `checkpoint` file shows them (times in ms).
FIGURES = ("dumped_at", "suspend_ms", "dump_ms", "frozen_ms", "freezing_ms", "memdump_ms",
           "memwrite_ms", "pages_written", "images_bytes",
           "restored_at", "restore_ms", "criu_restore_ms", "restore_time_ms", "forking_ms",
           "pages_restored")


def record(domain_dir: str, figures: dict[str, float], fresh: bool) -> None:
    """checkpoint.json: the figures of the last dump and the restore that followed it."""
    path = os.path.join(domain_dir, RECORD)
    current: dict[str, float] = {}
    if not fresh:
        try:
            with open(path) as f:
                current = json.load(f)
        except (OSError, ValueError):
            current = {}
    current.update(figures)
    atomic_write(path, json.dumps(current, sort_keys=True))
