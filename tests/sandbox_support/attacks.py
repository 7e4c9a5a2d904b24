"""Attack snippets for the sandbox suite. Each returns the code to run; the test asserts containment."""

from __future__ import annotations

from pathlib import Path


def network(port: int) -> str:
    # a loopback listener owned by the test, then a TEST-NET address (unroutable: nothing can leave)
    return (
        "import socket\n"
        "for host, port in [('127.0.0.1', %d), ('192.0.2.1', 80), ('::1', %d)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=1).send(b'escaped')\n"
        "        print('CONNECTED', host)\n"
        "    except OSError as e:\n"
        "        print('blocked', host, type(e).__name__)\n"
    ) % (port, port)


def read_file(path: Path | str) -> str:
    return (
        "import os\n"
        f"p = {str(path)!r}\n"
        "try:\n"
        "    print('LEAK', open(p).read())\n"
        "except OSError as e:\n"
        "    print('blocked', type(e).__name__)\n"
    )


def list_dir(path: Path | str) -> str:
    return (
        "import os\n"
        "try:\n"
        f"    print('LISTING', sorted(os.listdir({str(path)!r})))\n"
        "except OSError as e:\n"
        "    print('blocked', type(e).__name__)\n"
    )


def write_file(path: Path | str) -> str:
    return (
        "try:\n"
        f"    open({str(path)!r}, 'w').write('pwned')\n"
        "    print('WROTE')\n"
        "except OSError as e:\n"
        "    print('blocked', type(e).__name__)\n"
    )


ENV_SECRET = "import os\nprint('ENV', dict(os.environ))\nprint('LEAK' if any('SECRET' in k or 'API_KEY' in k for k in os.environ) else 'clean')"
ENV_SECRET_PROC = (
    "import os\n"
    "found = []\n"
    "try:\n"
    "    pids = os.listdir('/proc')\n"
    "except OSError:\n"
    "    pids = []  # no /proc at all (Landlock): nothing to read\n"
    "for p in pids:\n"
    "    try:\n"
    "        data = open(f'/proc/{p}/environ', 'rb').read()\n"
    "        if b'toolrl-test-secret' in data: found.append(p)\n"
    "    except OSError: pass\n"
    "print('LEAK' if found else 'clean')\n"
)
FORK_STORM = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
MEMORY_BOMB = "x = 'a' * 10**10\nprint(len(x))"
MEMORY_HOG = "blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 2**20))"
BUSY_LOOP = "while True:\n    pass"
HUGE_OUTPUT = "import sys\nfor i in range(200000):\n    sys.stdout.write('x' * 99 + '\\n')\nprint('END')"
FLOOD_STDOUT = "import os\nwhile True:\n    os.write(1, b'y' * 65536)"
CLOSE_STDOUT = "import os\nos.close(1)\nos.close(2)\nprint('gone')"
FINALLY_LOOP = "try:\n    while True: pass\nfinally:\n    while True: pass"
KILL_PARENT = (
    "import os, signal\n"
    "for target in (os.getppid(), 1, -1):\n"
    "    try:\n"
    "        os.kill(target, signal.SIGKILL)\n"
    "    except OSError as e:\n"
    "        print('blocked', target, type(e).__name__)\n"
    "print('still here')\n"
)
KILL_ALL = "import subprocess\nsubprocess.run(['kill', '-9', '-1'])\nprint('survived')"
BIG_FILE = "open('big.bin', 'wb').write(b'0' * (64 * 2**20))"


def double_fork(marker: str) -> str:
    """A setsid grandchild that would outlive the execution; it writes its pid where the test can see it."""
    return (
        "import os, time, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        for _ in range(600):\n"
        f"            time.sleep(0.1)\n"
        "        os._exit(0)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n"
        f"print({marker!r}, flush=True)\n"
        "while True: pass\n"
    )


def read_via_tricks(path: Path | str) -> str:
    """Every indirect route to a host file: a symlink in the working directory, a hard link, /proc/self/root,
    the root and cwd of every visible process, and descriptors left open by someone else."""
    return (
        "import os, glob\n"
        f"p = {str(path)!r}\n"
        "def show(route, f):\n"
        "    try:\n"
        "        print('LEAK', route, f())\n"
        "    except (OSError, ValueError) as e:\n"
        "        print('blocked', route, type(e).__name__)\n"
        "def rd(q):\n"
        "    with open(q) as fh: return fh.read()\n"
        "show('direct', lambda: rd(p))\n"
        "try: os.symlink(p, 'via-symlink')\n"
        "except OSError as e: print('blocked symlink-create', type(e).__name__)\n"
        "show('symlink', lambda: rd('via-symlink'))\n"
        "show('hardlink', lambda: (os.link(p, 'via-hardlink'), rd('via-hardlink'))[1])\n"
        "show('proc-self-root', lambda: rd('/proc/self/root' + p))\n"
        "for d in glob.glob('/proc/[0-9]*'):\n"
        "    show(d + '/root', lambda: rd(d + '/root' + p))\n"
        "    if d != f'/proc/{os.getpid()}':  # another process's working directory\n"
        "        show(d + '/cwd', lambda: os.listdir(d + '/cwd'))\n"
        "fds = []\n"
        "for fd in range(1024):\n"
        "    try:\n"
        "        os.fstat(fd); fds.append(fd)\n"
        "    except OSError: pass\n"
        "print('FDS', fds)\n"
        "for fd in fds:\n"
        "    if fd > 4:\n"
        "        show(f'fd{fd}', lambda: os.pread(fd, 4096, 0).decode(errors='replace'))\n"
    )


def fill_tmp(mb: int) -> str:
    """Write until something says no, in every writable-looking place."""
    return (
        "import os\n"
        "for d in ('/tmp', '/dev/shm', '/var/tmp', '.'):\n"
        "    total = 0\n"
        "    try:\n"
        f"        for i in range({mb // 8 + 8}):\n"
        "            with open(os.path.join(d, f'fill{i}'), 'wb') as f:\n"
        "                f.write(b'0' * (8 * 2**20 - 4096))\n"
        "            total += 8\n"
        "    except OSError as e:\n"
        "        print('stopped', d, total, type(e).__name__)\n"
        "    else:\n"
        "        print('FILLED', d, total)\n"
    )


FD_EXHAUST = (
    "import os\n"
    "fds = []\n"
    "try:\n"
    "    while True:\n"
    "        fds.extend(os.pipe())\n"
    "except OSError as e:\n"
    "    print('stopped at', len(fds), type(e).__name__)\n"
)

PTRACE_AND_SIGNAL = (
    "import ctypes, os, signal\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "targets = {os.getppid(), 1} | {int(p) for p in os.listdir('/proc') if p.isdigit()} if os.path.isdir('/proc') else {1}\n"
    "targets |= set(range(2, 400))\n"
    "attached = []\n"
    "for pid in sorted(targets - {os.getpid()}):\n"
    "    if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH\n"
    "        attached.append(pid)\n"
    "    for sig in (signal.SIGSTOP, signal.SIGKILL):\n"
    "        try:\n"
    "            os.kill(pid, sig)\n"
    "        except OSError:\n"
    "            pass\n"
    "print('PTRACED' if attached else 'no ptrace', attached)\n"
)


def abstract_socket(name: str) -> str:
    return (
        "import socket\n"
        "for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX, kind)\n"
        f"        s.connect({name!r})\n"
        "        s.send(b'escaped')\n"
        "        print('CONNECTED', kind)\n"
        "    except OSError as e:\n"
        "        print('blocked', kind, type(e).__name__)\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
        f"        s.sendto(b'escaped', {name!r})\n"
        "        print('SENT')\n"
        "    except OSError as e:\n"
        "        print('blocked sendto', type(e).__name__)\n"
    )


SESSION_SPY = (
    "import os, glob\n"
    "print('VARS', [k for k in globals() if k.startswith('secret')])\n"
    "for pattern in ('/tmp/*', '/tmp/*/*', '/var/tmp/*', '/dev/shm/*', '/proc/[0-9]*/cwd/*', '/proc/[0-9]*/environ', PEER + '/*'):\n"
    "    for q in glob.glob(pattern):\n"
    "        try:\n"
    "            data = open(q, 'rb').read()\n"
    "            if b'SESSIONSECRET' in data: print('LEAK', q)\n"
    "        except OSError: pass\n"
    "for d in glob.glob('/proc/[0-9]*'):\n"
    "    if d == f'/proc/{os.getpid()}': continue  # its own memory\n"
    "    try:\n"
    "        with open(d + '/mem', 'rb') as f: print('MEMOPEN', d)\n"
    "    except OSError: pass\n"
    "print('done')\n"
)
