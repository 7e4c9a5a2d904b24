"""The allowlist view of the filesystem: a fresh root that holds only what Python needs, read-only.

``build_root`` runs once per worker, inside its new mount namespace (as root, or as root of a user
namespace): every allowlisted host path is cloned as a detached mount tree (open_tree), made read-only,
nosuid and nodev recursively (mount_setattr), and attached to an empty tmpfs that becomes ``/`` (pivot_root);
the old root is detached, so no path, symlink, ``..`` or ``/proc/<pid>/root`` leads back to the host.

``enter_private`` runs once per execution, in the child, inside a new mount namespace of its own: a fresh
size-limited tmpfs on ``/tmp`` (also the working directory, ``/var/tmp`` and ``/dev/shm``) and a fresh
``/proc`` for the execution's PID namespace. Both vanish with the execution; executions never see each
other's files or processes, even when they share one uid.
"""

from __future__ import annotations

import os

from toolrl.sandbox import linux
from toolrl.sandbox.policy import DEVICES, Policy

# Where the new root is assembled: a host directory our private tmpfs covers. It must not hold an allowlisted
# path (a tree cloned from beneath it cannot be attached inside the tmpfs that covers it).
_STAGES = ("/tmp", "/mnt", "/media", "/srv", "/opt", "/run")
_RO = linux.MOUNT_ATTR_RDONLY | linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NODEV
_PASSWD = "root:x:0:0:root:/tmp:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
_GROUP = "root:x:0:\nnogroup:x:65534:\n"


def stage_for(read_only: list[str]) -> str:
    """The first staging directory that exists and lies outside every allowlisted path (``/tmp`` unless a
    virtual environment or checkout lives there, then ``/mnt`` and so on)."""
    for d in _STAGES:
        if os.path.isdir(d) and not os.path.islink(d) and not any(p == d or p.startswith(d + "/") for p in read_only):
            return d
    raise OSError(f"no staging directory outside the allowlist (tried {', '.join(_STAGES)})")


def _place(stage: str, host_path: str, fd: int) -> None:
    target = stage + host_path
    if os.path.isdir(host_path):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            open(target, "w").close()
    linux.attach_tree(fd, target)
    os.close(fd)


def build_root(policy: Policy) -> None:
    """Replace this mount namespace's root by the allowlist view (see module docstring)."""
    linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)  # nothing we do leaks to the host
    stage = stage_for(policy.read_only)
    trees: list[tuple[str, int]] = []
    for path in policy.read_only:
        fd = linux.clone_path(path, recursive=True)
        linux.set_tree_attr(fd, _RO)
        trees.append((path, fd))
    for dev in DEVICES:
        if os.path.exists(dev):
            fd = linux.clone_path(dev, recursive=False)
            linux.set_tree_attr(fd, linux.MOUNT_ATTR_NOSUID | linux.MOUNT_ATTR_NOEXEC)
            trees.append((dev, fd))
    # The host /proc, kept only under the fresh /proc each execution mounts: inside a user namespace the
    # kernel lets a new procfs be mounted only where one is already fully visible.
    proc = linux.clone_path("/proc", recursive=True)
    links = {name: os.readlink(f"/{name}") for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
             if os.path.islink(f"/{name}")}
    localtime = os.readlink("/etc/localtime") if os.path.islink("/etc/localtime") else None

    linux.mount("toolrl-root", stage, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=4m,mode=755")
    for path, fd in trees:
        if path == "/etc/localtime" and localtime is not None:
            os.close(fd)
            continue
        _place(stage, path, fd)
    os.makedirs(stage + "/proc", exist_ok=True)
    linux.attach_tree(proc, stage + "/proc")
    os.close(proc)
    for name, dest in links.items():
        os.symlink(dest, f"{stage}/{name}")
    os.makedirs(stage + "/etc", exist_ok=True)
    if localtime is not None:
        os.symlink(localtime, stage + "/etc/localtime")
    for name, text in (("passwd", _PASSWD), ("group", _GROUP)):
        with open(f"{stage}/etc/{name}", "w") as f:
            f.write(text)
    os.makedirs(stage + "/tmp", 0o755, exist_ok=True)  # exists already when an allowlisted path lives under /tmp
    os.makedirs(stage + "/var", exist_ok=True)
    os.symlink("/tmp", stage + "/var/tmp")
    os.makedirs(stage + "/dev", exist_ok=True)
    for name, dest in (("shm", "/tmp"), ("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                       ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(dest, f"{stage}/dev/{name}")
    for hidden in policy.hide_paths:  # the optional blocklist, inside the view
        if os.path.isdir(stage + hidden):
            linux.mount("tmpfs", stage + hidden, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_RDONLY,
                        "size=4k,mode=755")

    os.chdir(stage)
    linux.pivot_root(".", ".")  # the old root now sits on top of the new one ...
    linux.umount(".", linux.MNT_DETACH)  # ... and is detached: the host's tree is unreachable from here
    os.chdir("/")
    linux.mount("none", "/", None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV)


def enter_private(policy: Policy, uid: int | None, own_pidns: bool) -> str:
    """Per execution: own mount namespace, fresh /tmp (the working directory) and /proc. Returns the cwd.

    Without a PID namespace of its own a fresh procfs would list the worker's processes: /proc stays empty.
    """
    linux.unshare(linux.CLONE_NEWNS)
    # Allowlisted trees that live under /tmp (a virtual environment or checkout there) would vanish under the
    # fresh /tmp: keep a clone of each and put it back, read-only, at its path inside the new tmpfs.
    kept = [(p, linux.clone_path(p, recursive=True)) for p in policy.read_only if p.startswith("/tmp/")]
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    linux.mount("toolrl-tmp", "/tmp", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV,
                f"size={policy.tmpfs_mb}m,mode=700{owner}")
    # Their parent directories go on small tmpfs mounts made read-only afterwards: code that runs as the owner of
    # /tmp (a user namespace mapping only the caller) must not be able to write beside them.
    tops = {"/tmp/" + p[len("/tmp/"):].split("/")[0] for p, _ in kept} - {p for p, _ in kept}
    for top in sorted(tops):
        os.mkdir(top, 0o755)
        linux.mount("toolrl-keep", top, "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, "size=64k,mode=755")
    for path, fd in kept:
        linux.set_tree_attr(fd, _RO)
        os.makedirs(path, 0o755, exist_ok=True)
        linux.attach_tree(fd, path)
        os.close(fd)
    for top in sorted(tops):
        linux.mount("none", top, None, linux.MS_REMOUNT | linux.MS_RDONLY | linux.MS_NOSUID | linux.MS_NODEV)
    cwd = "/tmp"
    if kept:  # the put-back trees' parent directories sit in /tmp: the code starts in an empty directory of its own
        cwd = "/tmp/work"
        os.mkdir(cwd, 0o700)
        if uid is not None:
            os.chown(cwd, uid, uid)
    try:
        if not own_pidns:
            raise OSError("no PID namespace")
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError:  # no fresh procfs allowed here: an empty /proc rather than the host's
        linux.mount("toolrl-noproc", "/proc", "tmpfs", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_RDONLY,
                    "size=4k,mode=555")
    return cwd
