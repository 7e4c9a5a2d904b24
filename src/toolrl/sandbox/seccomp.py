"""The seccomp filter every sandboxed execution runs under, compiled once per worker with libseccomp.

Default allow; the calls below fail with EPERM. The filter is the layer that needs no privilege at all, so it
carries the network and escape rules on hosts without namespaces:
- sockets: only AF_UNIX stream sockets may be created and ``connect`` is refused, so nothing can reach a
  TCP/UDP service, an abstract or path-named Unix socket of the host, or send a datagram anywhere;
  ``socketpair`` (asyncio's self-pipe) still works;
- debugging and memory access to other processes (ptrace, process_vm_*, pidfd_getfd);
- new namespaces (unshare, setns, clone with CLONE_NEW*; clone3 answers ENOSYS so libc falls back to clone);
- mounts of any kind, pivot_root, chroot, kernel keyrings, bpf, perf events, userfaultfd, io_uring, modules,
  kexec, swap, reboot, file handles (open_by_handle_at walks around path checks).
Calls of a foreign architecture (i386 on x86_64) kill the process (libseccomp's default for unlisted arches).
"""

from __future__ import annotations

import errno
import os

_DENY = (
    "connect", "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr", "keyctl", "add_key", "request_key", "bpf",
    "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "swapon", "swapoff",
    "reboot", "open_by_handle_at", "name_to_handle_at", "acct", "quotactl", "syslog", "vhangup",
)
_CLONE_NEW = (0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080)
_AF_UNIX = 1
_SOCK_TYPE_MASK = 0xF
_SOCK_STREAM = 1


def compile_filter() -> bytes:
    """The filter as classic BPF bytes (raises OSError/ImportError when libseccomp is unavailable)."""
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    deny = sc.ERRNO(errno.EPERM)
    for name in _DENY:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            pass  # unknown to this libseccomp/arch: the call does not exist here
    f.add_rule(deny, "socket", sc.Arg(0, sc.NE, _AF_UNIX))
    for kind in range(16):  # AF_UNIX: stream sockets only (a datagram can be sent to any socket path)
        if kind != _SOCK_STREAM:
            f.add_rule(deny, "socket", sc.Arg(1, sc.MASKED_EQ, _SOCK_TYPE_MASK, kind))
    for flag in _CLONE_NEW:  # x86_64 and arm64 both pass clone's flags first
        f.add_rule(deny, "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")  # its flags sit behind a pointer seccomp cannot read
    r, w = os.pipe()
    try:
        with os.fdopen(w, "wb", closefd=True) as out:
            f.export_bpf(out)
        chunks = []
        while chunk := os.read(r, 65536):
            chunks.append(chunk)
    finally:
        os.close(r)
    return b"".join(chunks)
