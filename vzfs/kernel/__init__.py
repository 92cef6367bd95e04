"""Direct access to the Linux kernel: syscalls through cffi, cgroup and proc files."""
