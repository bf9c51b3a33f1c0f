"""Sharding inference jobs across processes started by torchrun (no process group needed)."""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (1 process when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> "DistInfo":
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def merge_summaries(self, out_dir: Path, summary: dict, timeout_s: float = 3600.0) -> dict:
        """Every rank writes ``summary.rank<r>.json``; rank 0 waits for all of them and returns the merged
        summary (targets united, failures concatenated, counts summed); other ranks return their own."""
        part = out_dir / f"summary.rank{self.rank}.json"
        tmp = part.with_suffix(".tmp")
        tmp.write_text(json.dumps(summary))
        os.replace(tmp, part)
        if not self.is_main:
            return summary
        parts = [out_dir / f"summary.rank{r}.json" for r in range(self.world_size)]
        deadline = time.monotonic() + timeout_s
        while not all(p.exists() for p in parts):
            if time.monotonic() > deadline:
                missing = [p.name for p in parts if not p.exists()]
                raise TimeoutError(f"{out_dir}: ranks never reported: {', '.join(missing)}")
            time.sleep(0.2)
        merged = dict(summary)
        merged["targets"], merged["failed"] = {}, []
        merged["seconds"] = 0.0
        for p in parts:
            s = json.loads(p.read_text())
            merged["targets"].update(s["targets"])
            merged["failed"].extend(s["failed"])
            merged["seconds"] = max(merged["seconds"], s["seconds"])
            p.unlink()
        merged["num_ok"], merged["num_failed"] = len(merged["targets"]), len(merged["failed"])
        merged["world_size"] = self.world_size
        return merged
