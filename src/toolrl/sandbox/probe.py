"""`toolrl sandbox check`: find out which protections are really active by running probes inside a sandbox,
next to the layers the host gave the local backend (what each one protects)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import tempfile
from dataclasses import dataclass
from typing import Any

from toolrl.sandbox.base import Sandbox

# Runs inside the sandbox; prints one JSON object of observations.
_PROBE = r'''
import ctypes, json, os, resource, socket
obs = {"uid": os.getuid(), "pid": os.getpid(), "env": sorted(os.environ)}
def attempt(key, fn):
    try:
        obs[key] = fn()
    except OSError as e:
        obs[key] = type(e).__name__
def connect(addr):
    s = socket.create_connection(addr, timeout=1); s.close(); return "connected"
attempt("loopback", lambda: connect(("127.0.0.1", PORT)))
attempt("external", lambda: connect(("192.0.2.1", 80)))
def abstract():
    s = socket.socket(socket.AF_UNIX); s.settimeout(1); s.connect(ABSTRACT); s.close(); return "connected"
attempt("abstract", abstract)
attempt("root_file", lambda: open("/etc/shadow").read(1) and "read")
attempt("sentinel", lambda: open(SENTINEL).read())
attempt("data_dir", lambda: sorted(os.listdir(DATA))[:5] if DATA else "unset")
attempt("project", lambda: sorted(os.listdir(PROJECT))[:5])
attempt("procs", lambda: len([p for p in os.listdir("/proc") if p.isdigit()]))
class H(ctypes.Structure):
    _fields_ = [("v", ctypes.c_uint32), ("pid", ctypes.c_int)]
class D(ctypes.Structure):
    _fields_ = [("e", ctypes.c_uint32), ("p", ctypes.c_uint32), ("i", ctypes.c_uint32)]
h, d = H(0x20080522, 0), (D * 2)()
ctypes.CDLL(None).capget(ctypes.byref(h), ctypes.byref(d))
obs["caps"] = d[0].e | d[1].e << 32
lim = {}
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE", "RLIMIT_NOFILE"):
    lim[name] = resource.getrlimit(getattr(resource, name))[0]
obs["rlimits"] = lim
print(json.dumps(obs))
'''

# What each layer gives, for the check table.
LAYER_HELP = {
    "userns": "namespaces without root (your uid mapped into a user namespace)",
    "netns": "no network at all: no interface but a downed loopback",
    "view": "allowlist view: only Python, system libraries and a private /tmp exist",
    "pidns": "a PID namespace per execution: nothing outlives it, no other process is visible",
    "uid": "separate uid per pool slot (process limits and file ownership apart)",
    "seccomp": "no sockets but AF_UNIX streams, no connect, ptrace, mount, namespaces, keyrings, bpf ...",
    "landlock": "allowlist enforced by the kernel without namespaces (files, TCP, abstract sockets, signals)",
    "rlimits": "memory, CPU seconds, processes, file size, open files",
    "no_new_privs": "setuid programs give nothing back",
}


_DAC_READ_SEARCH = 1 << 2


@dataclass
class Check:
    name: str
    active: bool
    evidence: str


def run_probe(sandbox: Sandbox, project_dir: str | None = None, data_dir: str | None = None) -> list[Check]:
    project = os.path.realpath(project_dir or os.getcwd())
    data = data_dir or os.environ.get("TOOLRL_DATA_DIR") or ""
    token = "toolrl-sentinel-" + secrets.token_hex(6)
    outside = tempfile.mkdtemp(prefix="toolrl-check-")
    sentinel = os.path.join(outside, "answer.txt")
    with open(sentinel, "w") as f:
        f.write(token)
    os.chmod(outside, 0o755)
    os.chmod(sentinel, 0o644)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    abstract = "\0toolrl-check-" + secrets.token_hex(6)
    unix = socket.socket(socket.AF_UNIX)
    unix.bind(abstract)
    unix.listen(1)
    code = (_PROBE.replace("PORT", str(listener.getsockname()[1])).replace("PROJECT", repr(project))
            .replace("SENTINEL", repr(sentinel)).replace("DATA", repr(data)).replace("ABSTRACT", repr(abstract)))
    try:
        result = sandbox.run(code, timeout_s=20)
    finally:
        listener.close()
        unix.close()
        shutil.rmtree(outside, ignore_errors=True)
    try:
        obs: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [Check("sandbox", False, f"probe did not run: {result.kind.value} {result.error_line or result.detail}")]
    from toolrl.sandbox.policy import python_paths

    py = python_paths()  # the Python installation is visible on purpose (lazy imports need it)
    listed = obs["project"] if isinstance(obs["project"], list) else []
    visible = [n for n in listed if not any(p.startswith(os.path.join(project, n)) for p in py)]
    secrets_seen = [k for k in obs["env"] if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))]
    lim = obs["rlimits"]
    unlimited = [k for k, v in lim.items() if v == -1]
    procs = obs["procs"]
    return [
        Check("network", "connected" not in (obs["loopback"], obs["external"]),
              f"loopback: {obs['loopback']}, external: {obs['external']}"),
        Check("host unix sockets", obs["abstract"] != "connected", f"abstract socket: {obs['abstract']}"),
        Check("no privileges", obs["caps"] & ~_DAC_READ_SEARCH == 0,
              f"uid {obs['uid']}, capabilities {obs['caps']:#x}"
              + (" (CAP_DAC_READ_SEARCH only: the interpreter is not world-readable; Landlock bounds reads)"
                 if obs["caps"] == _DAC_READ_SEARCH else "")),
        Check("root-only files", obs["root_file"] != "read", f"/etc/shadow: {obs['root_file']}"),
        Check("outside the allowlist", obs["sentinel"] != token, f"a fresh file in {outside}: {obs['sentinel'] if obs['sentinel'] != token else 'READ'}"),
        Check("data directory", not isinstance(obs["data_dir"], list), f"{data or '(TOOLRL_DATA_DIR unset)'}: {obs['data_dir']}"),
        Check("project hidden", not visible, f"{project}: {obs['project'] or 'empty'}"),
        Check("pid namespace", obs["pid"] == 1, f"code runs as pid {obs['pid']}"),
        Check("process list hidden", not isinstance(procs, int) or procs < 20,
              f"{procs} processes visible in /proc" if isinstance(procs, int) else f"/proc: {procs}"),
        Check("clean environment", not secrets_seen, f"variables: {', '.join(obs['env'])}"),
        Check("rlimits", not unlimited, ", ".join(f"{k[7:]}={v}" for k, v in lim.items())),
    ]
