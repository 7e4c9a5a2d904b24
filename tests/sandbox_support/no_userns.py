"""Run a command the way Docker's default seccomp profile would: no new user namespaces (and no privilege to
regain them). Usage: python no_userns.py CMD ARGS...  Used by test_sandbox_modes.py to reach the fallback."""

from __future__ import annotations

import errno
import os
import sys

import pyseccomp as sc


def main() -> None:
    f = sc.SyscallFilter(sc.ALLOW)
    f.add_rule(sc.ERRNO(errno.EPERM), "unshare", sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, 0x10000000, 0x10000000))
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    f.load()  # libseccomp sets no_new_privs first
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
