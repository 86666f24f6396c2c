"""Run a check on real gloo ranks (spawned processes) and fail the calling test with every rank's report.

``check(rank, world, *args)`` runs inside an initialized default process group. It returns a list of failure
messages (to report several cases from one spawn) or None; an exception is reported with its traceback. A timeout
on the group makes a broken collective fail instead of hanging.
"""

import os
import traceback
from datetime import timedelta

import torch.distributed as dist
import torch.multiprocessing as mp


def run_on_gloo_ranks(tmp_path, world: int, check, *args, timeout_s: int = 120) -> None:
    mp.spawn(_rank_main, args=(world, check, args, str(tmp_path / "init"), str(tmp_path / "failures"), timeout_s),
             nprocs=world, join=True)
    reports = [p.read_text() for p in sorted(tmp_path.glob("failures.*"))]
    assert not reports, "\n\n".join(reports)


def _rank_main(rank: int, world: int, check, args: tuple, init_file: str, result_file: str, timeout_s: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=timeout_s))
    try:
        failures = list(check(rank, world, *args) or [])
    except Exception:
        failures = [traceback.format_exc()]
    finally:
        dist.destroy_process_group()
    if failures:
        with open(f"{result_file}.{rank}", "w") as f:
            f.write("\n".join(f"rank {rank}: {failure}" for failure in failures))
