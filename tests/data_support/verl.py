"""ToRL's validation set in verl layout, rebuilt from the local benchmark files (aime24 x4, aime25 x4, MATH-500
level 5): data_source, prompt = [system, user], ability, reward_model.ground_truth, extra_info.id (a uuid per row)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def torl_validation_rows(data_dir: Path) -> list[dict]:
    rng = uuid.UUID(int=0)
    rows = []
    parts = [("aime24", _rows(data_dir / "aime24.jsonl"), 4), ("aime25", _rows(data_dir / "aime25.jsonl"), 4),
             ("math500", [r for r in _rows(data_dir / "math500.jsonl") if r.get("level") == 5], 1)]
    n = 0
    for source, items, k in parts:
        for _ in range(k):
            for r in items:
                n += 1
                rows.append({
                    "data_source": source,
                    "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": r["problem"]}],
                    "ability": "math",
                    "reward_model": {"style": "rule", "ground_truth": str(r["answer"])},
                    "extra_info": {"id": str(uuid.UUID(int=rng.int + n)), "index": n},
                })
    return rows


def write_torl_parquet(data_dir: Path, path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(torl_validation_rows(data_dir)), path)
    return path
