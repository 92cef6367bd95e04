"""The C declarations vzfs uses, kept as data for cffi (ABI mode, no compiler needed)."""

import platform

CDEFS = """
int unshare(int flags);
int setns(int fd, int nstype);
int mount(const char *source, const char *target, const char *filesystemtype,
          unsigned long mountflags, const void *data);
int umount2(const char *target, int flags);
int sethostname(const char *name, size_t len);
int prctl(int option, unsigned long arg2, unsigned long arg3,
          unsigned long arg4, unsigned long arg5);
long syscall(long number, ...);
int ioctl(int fd, unsigned long request, ...);
"""

# Syscalls glibc has no wrapper for (or only since 2.36). Numbers from the
# kernel's arch/*/entry/syscalls tables; the ones from 424 on are the same on
# every architecture ("unified" numbering).
_ARCH_SYSCALLS = {
    "x86_64": {"pivot_root": 155},
    "aarch64": {"pivot_root": 41},
}
SYSCALLS = {
    "open_tree": 428,
    "move_mount": 429,
    "openat2": 437,
    "mount_setattr": 442,
    **_ARCH_SYSCALLS.get(platform.machine(), _ARCH_SYSCALLS["x86_64"]),
}

# <linux/sched.h>
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# <linux/mount.h>
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MNT_DETACH = 2

# <linux/prctl.h>
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15

# <asm-generic/ioctls.h>
TIOCSCTTY = 0x540E
