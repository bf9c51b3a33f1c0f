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
    def from_env(cls) -> DistInfo:
        return cls(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @staticmethod
    def run_id() -> str:
        """An id shared by the processes of one launch (torchrun's rendezvous id), "" when unknown."""
        rid = os.environ.get("TORCHELASTIC_RUN_ID", "")
        if rid:
            return rid
        addr, port = os.environ.get("MASTER_ADDR", ""), os.environ.get("MASTER_PORT", "")
        return f"{addr}:{port}" if addr or port else ""

    def merge_summaries(self, out_dir: Path, summary: dict, timeout_s: float = 3600.0) -> dict:
        """Every rank writes ``summary.rank<r>.json``; rank 0 waits for all of them and returns the merged
        summary (targets united, failures concatenated, counts summed); other ranks return their own.

        Parts are tagged with :meth:`run_id`, so a part left in ``out_dir`` by an earlier, crashed launch is
        never mistaken for this launch's (rank 0 waits for the current one to replace it). A target reported
        by two ranks is a sharding bug and raises.
        """
        run_id = self.run_id()
        part = out_dir / f"summary.rank{self.rank}.json"
        tmp = part.with_suffix(".tmp")
        tmp.write_text(json.dumps({**summary, "run_id": run_id}))
        os.replace(tmp, part)
        if not self.is_main:
            return summary
        paths = [out_dir / f"summary.rank{r}.json" for r in range(self.world_size)]
        parts: dict[int, dict] = {}
        deadline = time.monotonic() + timeout_s
        while True:
            for r, p in enumerate(paths):
                if r not in parts:
                    s = _read_part(p)
                    if s is not None and s.get("run_id") == run_id:
                        parts[r] = s
            if len(parts) == self.world_size:
                break
            if time.monotonic() > deadline:
                missing = [paths[r].name for r in range(self.world_size) if r not in parts]
                raise TimeoutError(f"{out_dir}: ranks never reported: {', '.join(missing)}")
            time.sleep(0.2)
        merged = dict(summary)
        merged["targets"], merged["failed"] = {}, []
        merged["seconds"] = 0.0
        for r in range(self.world_size):
            s = parts[r]
            twice = sorted(set(s["targets"]) & set(merged["targets"]))
            if twice:
                raise RuntimeError(f"rank {r} reported targets another rank also did: {', '.join(twice)}")
            merged["targets"].update(s["targets"])
            merged["failed"].extend(s["failed"])
            merged["seconds"] = max(merged["seconds"], s["seconds"])
        for p in paths:
            p.unlink(missing_ok=True)
        merged["num_ok"], merged["num_failed"] = len(merged["targets"]), len(merged["failed"])
        merged["world_size"] = self.world_size
        return merged


def _read_part(path: Path) -> dict | None:
    """A rank's summary part, or None while it is absent (parts are written atomically)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
