"""Launcher: TorchTitan's own trainer, on GPUs as it is and on CPU-only machines through a few shims.

    python -m motif_titan.train --job.config_file train_configs/motif2_debug.toml
    torchrun --nproc_per_node=2 -m motif_titan.train --job.config_file ...

With an accelerator this changes nothing and calls ``torchtitan.train.main(CurriculumTrainer)`` (TorchTitan's
Trainer plus the curriculum's batch-size ramp and metrics hook, see motif_titan.trainer). Without one, TorchTitan
0.2.2 would pick CUDA and fail, so ``apply_cpu_shims`` first makes it run on the CPU with the gloo backend:
device type "cpu", the memory-stat functions its metrics call on ``torch.cpu``, a ``set_pg_timeouts`` whose
barrier takes no device id, and FSDP reductions as plain sums (gloo rejects AVG and PREMUL_SUM). A plain
``python -m`` run (no torchrun) gets the single-process rendezvous variables it needs.
Nothing imports this module: it is the only place where motif_titan patches TorchTitan or torch.

The console: ``motif_titan.console.install`` filters TorchTitan's log (INFO from rank 0 only, or the ranks in
``LOG_RANK``; no lines that mean nothing here; ``MOTIF_RAW_LOG=1`` shows it unfiltered), and the trainer adds
progress lines and a summary.
"""

import logging
import os
import resource
import socket
import sys
import warnings
from datetime import timedelta
from types import SimpleNamespace
from typing import NoReturn

import torch

from motif_titan import console
from motif_titan.infra.lifecycle import exit_with_launcher


def accelerator_available() -> bool:
    return torch.accelerator.is_available()


def _cpu_memory_stats(device=None) -> dict[str, int]:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"active_bytes.all.peak": peak, "reserved_bytes.all.peak": peak, "num_alloc_retries": 0,
            "num_ooms": 0}


def _cpu_device_properties(device=None) -> SimpleNamespace:
    return SimpleNamespace(total_memory=os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _set_pg_timeouts_cpu(timeout: timedelta, parallel_dims) -> None:
    """TorchTitan's set_pg_timeouts, minus the device id its barrier passes (gloo has no devices). The meshes of
    unused dimensions (efsdp when ep = 1) hold a FakeProcessGroup, which has no timeout to set: torch warns and
    skips it, quietly here."""
    torch.distributed.barrier()
    groups = [mesh.get_group() for mesh in parallel_dims.get_all_one_dimensional_meshes().values()] + [None]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Set timeout is now only supported for either nccl or gloo")
        for group in groups:
            torch.distributed.distributed_c10d._set_pg_timeout(timeout, group)


def apply_cpu_shims() -> None:
    """Make TorchTitan 0.2.2 train on the CPU. Idempotent; call it only when no accelerator is present."""
    import torchtitan.distributed.utils as tt_dist_utils
    import torchtitan.tools.utils as tt_utils
    from torch.distributed.fsdp._fully_shard._fsdp_param_group import FSDPParamGroup

    # Modules already imported bound TorchTitan's device globals by name: rebind every one of them.
    for name, module in list(sys.modules.items()):
        if not name.startswith("torchtitan") or module is None:
            continue
        if getattr(module, "device_type", None) == "cuda":
            module.device_type = "cpu"
        if getattr(module, "device_module", None) is torch.cuda:
            module.device_module = torch.cpu
    assert tt_utils.device_type == "cpu" and tt_utils.device_module is torch.cpu

    cpu_extras = {
        "get_device_name": lambda device=None: "CPU",
        "get_device_properties": _cpu_device_properties,
        "memory_stats": _cpu_memory_stats,
        "reset_peak_memory_stats": lambda device=None: None,
        "empty_cache": lambda: None,
    }
    for fn_name, fn in cpu_extras.items():
        if not hasattr(torch.cpu, fn_name):
            setattr(torch.cpu, fn_name, fn)

    tt_dist_utils.set_pg_timeouts = _set_pg_timeouts_cpu

    if not getattr(FSDPParamGroup, "_motif_force_sum", False):
        original_init = FSDPParamGroup.__init__

        def init_with_sum_reductions(self, *args, **kwargs):
            original_init(self, *args, **kwargs)
            self.force_sum_reduction_for_comms = True

        FSDPParamGroup.__init__ = init_with_sum_reductions
        FSDPParamGroup._motif_force_sum = True


def _set_single_process_env() -> None:
    """Rendezvous variables for a run started without torchrun (one process, world size 1)."""
    if "LOCAL_RANK" in os.environ:
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def main() -> None:
    exit_with_launcher()  # a torchrun worker dies with torchrun, even a SIGKILLed one
    _set_single_process_env()
    on_cpu = not accelerator_available()
    console.install(on_cpu)
    if on_cpu:
        apply_cpu_shims()
    from motif_titan.titan_version import TORCHTITAN_03

    if TORCHTITAN_03:
        from motif_titan.titan03.train import main as titan03_main

        titan03_main(sys.argv[1:])
        exit_without_teardown(0)
    import motif_titan  # noqa: F401  (registers the motif2 TrainSpec even without custom_import)
    from torchtitan.train import main as torchtitan_main

    from motif_titan.trainer import CurriculumTrainer
    from motif_titan.validate import check_config_file

    check_config_file(sys.argv[1:])  # unknown TOML keys, before TorchTitan's ConfigManager parses the file
    torchtitan_main(CurriculumTrainer)
    exit_without_teardown(0)


def exit_without_teardown(code: int) -> NoReturn:
    """End a finished run without the interpreter's teardown. TorchTitan's main has by then closed the trainer
    (checkpoint saves waited for, metrics and TensorBoard flushed) and destroyed the process groups, so the teardown
    has nothing left to do but free objects; on gloo it can instead abort a run that already succeeded: a
    background thread of torch's process-group machinery, still alive while the interpreter finalizes, ends in
    ``std::terminate`` ("terminate called without an active exception", SIGABRT, exit code -6; faulthandler then
    shows a single thread with no Python frame). Seen about once in a few hundred multi-rank CPU runs."""
    logging.shutdown()  # flush and close the log handlers (train.log)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
