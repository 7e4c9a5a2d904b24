"""`toolrl sandbox check`: find out which protections are really active by running probes inside a sandbox."""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from typing import Any

from toolrl.sandbox.base import Sandbox

# Runs inside the sandbox; prints one JSON object of observations.
_PROBE = r'''
import json, os, resource, socket
obs = {"uid": os.getuid(), "pid": os.getpid(), "env": sorted(os.environ)}
try:
    s = socket.create_connection(("127.0.0.1", PORT), timeout=1); s.close(); obs["loopback"] = "connected"
except OSError as e:
    obs["loopback"] = type(e).__name__
try:
    s = socket.create_connection(("192.0.2.1", 80), timeout=1); s.close(); obs["external"] = "connected"
except OSError as e:
    obs["external"] = type(e).__name__
try:
    open("/etc/shadow").read(1); obs["root_file"] = "read"
except OSError as e:
    obs["root_file"] = type(e).__name__
try:
    obs["project"] = sorted(os.listdir(PROJECT))[:5]
except OSError as e:
    obs["project"] = type(e).__name__
obs["procs"] = len([p for p in os.listdir("/proc") if p.isdigit()])
lim = {}
for name in ("RLIMIT_AS", "RLIMIT_CPU", "RLIMIT_NPROC", "RLIMIT_FSIZE"):
    lim[name] = resource.getrlimit(getattr(resource, name))[0]
obs["rlimits"] = lim
print(json.dumps(obs))
'''


@dataclass
class Check:
    name: str
    active: bool
    evidence: str


def run_probe(sandbox: Sandbox, project_dir: str | None = None) -> list[Check]:
    project = os.path.realpath(project_dir or os.getcwd())
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    code = _PROBE.replace("PORT", str(listener.getsockname()[1])).replace("PROJECT", repr(project))
    try:
        result = sandbox.run(code, timeout_s=20)
    finally:
        listener.close()
    try:
        obs: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return [Check("sandbox", False, f"probe did not run: {result.kind.value} {result.error_line or result.detail}")]
    from toolrl.sandbox.policy import python_paths

    py = python_paths()  # the Python installation is re-exposed on purpose (lazy imports need it)
    listed = obs["project"] if isinstance(obs["project"], list) else []
    visible = [n for n in listed if not any(p.startswith(os.path.join(project, n)) for p in py)]
    secrets = [k for k in obs["env"] if any(w in k.upper() for w in ("KEY", "TOKEN", "SECRET", "PASSWORD"))]
    lim = obs["rlimits"]
    unlimited = [k for k, v in lim.items() if v == -1]
    return [
        Check("network", obs["loopback"] != "connected" and obs["external"] != "connected",
              f"loopback: {obs['loopback']}, external: {obs['external']}"),
        Check("unprivileged uid", obs["uid"] != 0, f"uid {obs['uid']}"),
        Check("root-only files", obs["root_file"] != "read", f"/etc/shadow: {obs['root_file']}"),
        Check("project hidden", not visible, f"{project}: {obs['project'] or 'empty'}"),
        Check("pid namespace", obs["pid"] == 1, f"code runs as pid {obs['pid']}"),
        Check("process list hidden", obs["procs"] < 20, f"{obs['procs']} processes visible in /proc"),
        Check("clean environment", not secrets, f"variables: {', '.join(obs['env'])}"),
        Check("rlimits", not unlimited, ", ".join(f"{k[7:]}={v}" for k, v in lim.items())),
    ]
