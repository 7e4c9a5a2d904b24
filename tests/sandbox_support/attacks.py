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
    "for p in os.listdir('/proc'):\n"
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
