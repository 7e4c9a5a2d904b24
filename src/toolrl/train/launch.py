"""Entry point for the ``deepspeed`` launcher: every rank runs ``toolrl train`` with the same arguments.

    deepspeed --num_gpus 2 -m toolrl.train.launch --out runs/ddp algo.n_samples=8 ...

The launcher sets RANK / LOCAL_RANK / WORLD_SIZE / MASTER_ADDR / MASTER_PORT and appends ``--local_rank=N``,
which is dropped here (the rank comes from the environment). ``--out`` (or ``--resume``) is required so that all
ranks share one run directory; rank 0 shows the live view and writes metrics, the others stay quiet.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    cleaned: list[str] = []
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a.startswith("--local_rank=") or a.startswith("--local-rank="):
            continue
        if a in ("--local_rank", "--local-rank"):
            skip = True
            continue
        cleaned.append(a)
    from toolrl.cli import main as cli

    sys.argv = ["toolrl", "train", *cleaned]
    cli.main()


if __name__ == "__main__":
    main()
