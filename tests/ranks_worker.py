"""torchrun worker for tests/test_ranks.py: on_rank_zero and first_failure on every rank of a
gloo world; each rank writes what it saw (the result, or the exception type and message) and how
long the failing call took, as OUTDIR/rank<r>.json."""

import json
import sys
import time
from pathlib import Path

import torch.distributed as dist

from nemo_repo import ranks


def outcome(work, *args):
    start = time.monotonic()
    try:
        value = ranks.on_rank_zero(work, *args)
        return {"value": value, "seconds": time.monotonic() - start}
    except Exception as error:
        return {"error": type(error).__name__, "message": str(error), "seconds": time.monotonic() - start}


def write_file(path: Path) -> dict:
    path.write_text("written")
    return {"rank": ranks.rank(), "size": path.stat().st_size}


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    result = {
        "ok": outcome(write_file, out / "file.txt"),
        "fails": outcome(write_file, out / "missing" / "file.txt"),   # rank 0 cannot write
        "all_succeed": ranks.first_failure(None),
        "rank1_fails": ranks.first_failure("disk full" if ranks.rank() == 1 else None),
    }
    ranks.barrier()
    (out / f"rank{ranks.rank()}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
