"""Landlock (Linux >= 5.13) through its three system calls: an unprivileged process restricts itself to an
allowlist of paths, and, with newer ABIs, TCP ports, abstract Unix sockets and signals.

Used where the mount namespace (the allowlist view) is unavailable. Every access right the kernel's ABI knows
is handled, so anything not granted below is denied: reading outside the allowlist, writing outside the
private directory, linking or renaming a file into it (REFER), connecting TCP anywhere (ABI 4), reaching an
abstract Unix socket or signalling a process outside this execution (ABI 6).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable

_SYS_CREATE, _SYS_ADD_RULE, _SYS_RESTRICT = 444, 445, 446  # unified numbers, same on x86_64 and arm64
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
_TRUNCATE, _IOCTL_DEV = 1 << 14, 1 << 15
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | _TRUNCATE | _IOCTL_DEV  # the only rights a file rule may hold
_NET_TCP = 0b11  # BIND_TCP | CONNECT_TCP
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI (0 = unavailable: old kernel, or disabled at boot)."""
    v = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(0, int(v))


def _fs_rights(abi: int) -> int:
    return _FS_BY_ABI.get(abi, _FS_BY_ABI[5])


def restrict(read_only: Iterable[str], read_write: Iterable[str], abi: int) -> list[str]:
    """Restrict this process (and every future child) to the given paths. Returns the protections applied.

    ``read_only`` paths may be read and executed, ``read_write`` ones fully used; paths that do not exist
    are skipped. Raises OSError when the kernel refuses (the caller reports the layer as missing).
    """
    if abi < 1:
        raise OSError(95, "Landlock is not available on this kernel")
    handled = _fs_rights(abi)
    attr = _RulesetAttr(handled, _NET_TCP if abi >= 4 else 0,
                        (SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    fd = _libc.syscall(_SYS_CREATE, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock_create_ruleset: {os.strerror(err)}")
    try:
        for paths, rights in ((read_only, EXECUTE | READ_FILE | READ_DIR), (read_write, handled)):
            for path in paths:
                _allow(int(fd), path, rights & handled)
        if _libc.syscall(_SYS_RESTRICT, ctypes.c_int(fd), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_restrict_self: {os.strerror(err)}")
    finally:
        os.close(int(fd))
    applied = ["filesystem"]
    if abi >= 4:
        applied.append("tcp")
    if abi >= 6:
        applied += ["abstract-unix", "signals"]
    return applied


def _allow(ruleset: int, path: str, rights: int) -> None:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return
    try:
        if not os.path.isdir(path):
            rights &= _FILE_RIGHTS
        rule = _PathBeneath(rights, pfd)
        if _libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH),
                         ctypes.byref(rule), ctypes.c_uint32(0)) < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
    finally:
        os.close(pfd)
