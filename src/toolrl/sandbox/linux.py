"""Thin ctypes wrappers over the Linux calls the local sandbox needs (namespaces, mounts, prctl, per-id kill).

Pure standard library; every function raises OSError with the real errno so callers can report what the host
refuses. Syscall numbers for open_tree/move_mount are the unified ones (>= 424), identical on x86_64 and arm64.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REMOUNT = 0x20
MS_RDONLY = 0x1
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAPBSET_DROP = 24
PR_SET_SECCOMP = 22
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_CAP_AMBIENT_RAISE = 2
PR_SET_KEEPCAPS = 8
SECCOMP_MODE_FILTER = 2
MNT_DETACH = 2

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8

_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_AT_EMPTY_PATH = 0x1000
# the few calls whose numbers differ between the two architectures we support
_ARCH_SYSCALLS = {"x86_64": {"pivot_root": 155, "capset": 126}, "aarch64": {"pivot_root": 41, "capset": 91}}
_SYS = _ARCH_SYSCALLS.get(platform.machine(), {})
_OPEN_TREE_CLONE = 1
_AT_RECURSIVE = 0x8000
_AT_FDCWD = -100
_MOVE_MOUNT_F_EMPTY_PATH = 0x4

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(
        _libc.mount(
            source.encode(),
            target.encode(),
            fstype.encode() if fstype else None,
            ctypes.c_ulong(flags),
            data.encode() if data else None,
        ),
        f"mount {target}",
    )


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), 0, 0, 0), "prctl")


def clone_tree(path: str) -> int:
    """A detached copy of the mount tree at ``path`` (an fd), still usable after ``path`` is covered."""
    return _check(
        _libc.syscall(_SYS_OPEN_TREE, ctypes.c_int(_AT_FDCWD), path.encode(), ctypes.c_uint(_OPEN_TREE_CLONE | _AT_RECURSIVE)),
        f"open_tree {path}",
    )


def attach_tree(fd: int, target: str) -> None:
    """Mount a tree from :func:`clone_tree` at ``target``."""
    _check(
        _libc.syscall(
            _SYS_MOVE_MOUNT, ctypes.c_int(fd), b"", ctypes.c_int(_AT_FDCWD), target.encode(),
            ctypes.c_uint(_MOVE_MOUNT_F_EMPTY_PATH),
        ),
        f"move_mount {target}",
    )


def set_hostname(name: str) -> None:
    raw = name.encode()
    _check(_libc.sethostname(raw, ctypes.c_size_t(len(raw))), "sethostname")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def clone_path(path: str, recursive: bool = True) -> int:
    """A detached copy of the mount at ``path`` (directory or single file), as an fd."""
    flags = _OPEN_TREE_CLONE | (_AT_RECURSIVE if recursive else 0)
    return _check(
        _libc.syscall(_SYS_OPEN_TREE, ctypes.c_int(_AT_FDCWD), path.encode(), ctypes.c_uint(flags)),
        f"open_tree {path}",
    )


def set_tree_attr(fd: int, attrs: int) -> None:
    """Apply MOUNT_ATTR_* flags to a whole (detached) tree: read-only submounts included."""
    attr = _MountAttr(attrs, 0, 0, 0)
    _check(
        _libc.syscall(_SYS_MOUNT_SETATTR, ctypes.c_int(fd), b"", ctypes.c_uint(_AT_EMPTY_PATH | _AT_RECURSIVE),
                      ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
        "mount_setattr",
    )


def pivot_root(new_root: str, put_old: str) -> None:
    if "pivot_root" not in _SYS:
        raise OSError(38, f"pivot_root: unsupported architecture {platform.machine()}")
    _check(_libc.syscall(_SYS["pivot_root"], new_root.encode(), put_old.encode()), "pivot_root")


def umount(target: str, flags: int = 0) -> None:
    _check(_libc.umount2(target.encode(), ctypes.c_int(flags)), f"umount {target}")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _capset(bits: int) -> None:
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3: two 32-bit words
    data = (_CapData * 2)()
    data[0].effective = data[0].permitted = data[0].inheritable = bits & 0xFFFFFFFF
    data[1].effective = data[1].permitted = data[1].inheritable = bits >> 32
    _check(_libc.syscall(_SYS["capset"], ctypes.byref(header), ctypes.byref(data)), "capset")


def _drop_bounding(keep: int = -1) -> None:
    for cap in range(64):
        if cap == keep:
            continue
        if _libc.prctl(ctypes.c_int(PR_CAPBSET_DROP), ctypes.c_ulong(cap), 0, 0, 0) < 0:
            if ctypes.get_errno() == 22:  # EINVAL: past the last capability this kernel knows
                break
            _check(-1, "prctl(PR_CAPBSET_DROP)")


def switch_uid_keeping(uid: int, cap: int) -> None:
    """setresuid/gid to ``uid`` but keep one capability, also across execve (ambient)."""
    _drop_bounding(keep=cap)
    _check(_libc.prctl(ctypes.c_int(PR_SET_KEEPCAPS), ctypes.c_ulong(1), 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    _capset(1 << cap)
    _check(_libc.prctl(ctypes.c_int(PR_CAP_AMBIENT), ctypes.c_ulong(PR_CAP_AMBIENT_RAISE), ctypes.c_ulong(cap), 0, 0),
           "prctl(PR_CAP_AMBIENT_RAISE)")


def drop_all_capabilities() -> None:
    """Empty bounding, ambient, effective, permitted and inheritable sets (for code that keeps uid 0 of a
    user namespace): nothing the namespace owns (mounts, network) can be changed afterwards."""
    _drop_bounding()
    _libc.prctl(ctypes.c_int(PR_CAP_AMBIENT), ctypes.c_ulong(PR_CAP_AMBIENT_CLEAR_ALL), 0, 0, 0)
    _capset(0)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def load_seccomp(bpf: bytes) -> None:
    """Install a classic-BPF seccomp program (8 bytes per instruction); needs no_new_privs first."""
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(ctypes.c_int(PR_SET_SECCOMP), ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0),
           "prctl(PR_SET_SECCOMP)")


def has_capability(cap: int) -> bool:
    """Whether ``cap`` is in this process's effective set (from /proc/self/status)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> cap & 1)
    return False


CAP_DAC_READ_SEARCH = 2
CAP_SETUID = 7
CAP_SYS_ADMIN = 21
