"""Run a command as the sandbox's users really are: root without CAP_SYS_ADMIN (with or without user
namespaces, as in Docker by default) or an unprivileged uid. Root only; everything made is removed after."""

from __future__ import annotations

import os
import random
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

# mode -> (how it runs, sandbox.namespaces, the level it must reach)
MODES = {
    "nocap": ("capsh", True, "full"),  # root, CAP_SYS_ADMIN dropped: a user namespace maps a uid block
    "nocap-docker": ("capsh+no_userns", True, "contained"),  # ... and no user namespaces: seccomp + Landlock
    "user": ("setpriv", True, "full"),  # unprivileged uid: a user namespace maps only that uid
    # ... with parts of /proc covered as Docker does: no fresh /proc may be mounted, executions get an empty one
    "user-maskedproc": ("setpriv+maskproc", True, "full"),
    "user-nons": ("setpriv", False, "contained"),  # unprivileged, no namespaces at all
}


def tools_missing() -> list[str]:
    return [t for t in ("capsh", "setpriv", "unshare", "mount") if shutil.which(t) is None]


def throwaway_uid() -> int:
    """A uid no account and no process uses."""
    taken = {int(line.split(":")[2]) for line in open("/etc/passwd") if line.count(":") >= 3}
    while True:
        uid = random.randrange(20000, 60000)
        if uid not in taken and not any(os.stat(f"/proc/{p}").st_uid == uid for p in os.listdir("/proc") if p.isdigit()):
            return uid


def blocked_dirs(paths: list[str]) -> dict[str, set[str]]:
    """Directories another uid cannot walk through -> the entries below them it must reach (e.g. /root ->
    {.pyenv} when the interpreter lives in root's home)."""
    out: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(os.path.realpath(path)).parts
        for i in range(1, len(parts) - 1):
            d = os.path.join(*parts[: i + 1])
            if not os.stat(d).st_mode & stat.S_IXOTH:
                out.setdefault(d, set()).add(parts[i + 1])
                break
    return out


def command(mode: str, argv: list[str], *, uid: int, workdir: Path, env: dict[str, str]) -> list[str]:
    how = MODES[mode][0]
    env_args = ["env", "-i", *(f"{k}={v}" for k, v in env.items())]
    if how.startswith("capsh"):
        inner = [*env_args, *([sys.executable, str(HERE / "no_userns.py")] if "no_userns" in how else []), *argv]
        return ["capsh", "--drop=cap_sys_admin", "--", "-c", "exec " + shlex.join(inner)]
    # Unprivileged: a private mount namespace (made by root, before the uid drop) exposes only the needed
    # entries of directories the uid could not walk through; nothing on the host changes.
    script = ["mount -t tmpfs -o size=4k toolrl-mask /proc/bus"] if "maskproc" in how else []
    for i, (d, names) in enumerate(blocked_dirs([sys.base_prefix, sys.prefix, str(HERE.parents[1])]).items()):
        cover = workdir / f"cover{i}"
        script.append(f"mkdir -p {cover} && mount -t tmpfs -o mode=755,size=1m toolrl-cover {cover}")
        for n in names:
            src, dst = os.path.join(d, n), cover / n
            script.append(f"{'mkdir -p' if os.path.isdir(src) else 'touch'} {shlex.quote(str(dst))}")
            script.append(f"mount --rbind {shlex.quote(src)} {shlex.quote(str(dst))}")
        script.append(f"mount --rbind {cover} {shlex.quote(d)}")
    drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    script.append("exec " + shlex.join([*drop, *env_args, *argv]))
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", " && ".join(script)]


def run(mode: str, argv: list[str], *, cwd: Path, timeout: float, extra_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in ``mode``; a fresh work dir (HOME, temp files) is made for it and removed afterwards."""
    uid = throwaway_uid() if MODES[mode][0].startswith("setpriv") else 0
    workdir = Path(tmp := os.path.realpath(os.environ.get("TMPDIR", "/tmp"))) / f"toolrl-mode-{mode}-{os.getpid()}"
    workdir.mkdir(mode=0o755)
    home = workdir / "home"
    home.mkdir()
    os.chown(home, uid, uid)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(home),
        "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1",
        "TOOLRL_SANDBOX_MODE": mode, "TOOLRL_SANDBOX_NAMESPACES": "1" if MODES[mode][1] else "0",
        "TOOLRL_SANDBOX_EXPECT": MODES[mode][2], **extra_env,
    }
    del tmp
    argv = [a.replace("{home}", str(home)) for a in argv]
    try:
        return subprocess.run(command(mode, argv, uid=uid, workdir=workdir, env=env), cwd=cwd, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        if uid:
            from toolrl.sandbox.workers import kill_uids

            kill_uids({uid})
        shutil.rmtree(workdir, ignore_errors=True)
