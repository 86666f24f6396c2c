"""motif_titan.console: which ranks log (LOG_RANK), which of TorchTitan's lines are dropped or rewritten, and the
progress line's arithmetic, on log records made here (tests/integration/test_first_run.py launches the trainer)."""

import logging
import os
from types import SimpleNamespace

import pytest

from motif_titan.console import (CPU_MFU_EXPLAINED, ConsoleFilter, RunReport, duration, loss_rank,
                                 parse_log_ranks)
from motif_titan.config_checks import ConfigError


def record(message: str, level: int = logging.INFO, *args) -> logging.LogRecord:
    return logging.LogRecord("root", level, __file__, 1, message, args or None, None)


def shown(console: ConsoleFilter, message: str, level: int = logging.INFO) -> str | None:
    rec = record(message, level)
    return rec.getMessage() if console.filter(rec) else None


def job(pp: int = 1, schedule: str = "1F1B", dump: str = "/tmp/run", precision: str = "float32"):
    return SimpleNamespace(parallelism=SimpleNamespace(pipeline_parallel_degree=pp,
                                                       pipeline_parallel_schedule=schedule),
                           job=SimpleNamespace(dump_folder=dump),
                           training=SimpleNamespace(mixed_precision_param=precision, steps=100))


@pytest.mark.parametrize("spec,ranks", [(None, frozenset()), ("", frozenset()), ("all", None), ("ALL", None),
                                        ("0", frozenset({0})), ("1,3", frozenset({1, 3})),
                                        ("0,7", frozenset({0}))])  # rank 7 is not in a world of 4: ignored
def test_log_rank_values(spec, ranks):
    assert parse_log_ranks(spec, 4) == ranks


@pytest.mark.parametrize("spec", ["-1", "0,x", "first", ","])
def test_bad_log_rank_is_refused_naming_the_variable(spec):
    with pytest.raises(ConfigError, match=r"LOG_RANK = .*allowed: comma-separated ranks \(e.g. 0,1\), or all"):
        parse_log_ranks(spec, 4)


def test_info_from_rank_0_only_warnings_from_every_rank():
    rank0, rank1 = (ConsoleFilter(rank, 2, on_cpu=True, requested=frozenset()) for rank in (0, 1))
    assert shown(rank0, "Training starts at step 1") == "Training starts at step 1"
    assert shown(rank1, "Training starts at step 1") is None
    assert shown(rank1, "Checkpoint step 4 is damaged", logging.WARNING) == "Checkpoint step 4 is damaged"
    everyone = ConsoleFilter(1, 2, on_cpu=True, requested=None)  # LOG_RANK=all
    assert shown(everyone, "Training starts at step 1") == "Training starts at step 1"
    chosen = ConsoleFilter(1, 2, on_cpu=True, requested=frozenset({1}))  # LOG_RANK=1
    assert shown(chosen, "Training starts at step 1") == "Training starts at step 1"


def test_pipeline_parallel_also_logs_the_last_stages_first_rank(monkeypatch):
    monkeypatch.setenv("LOG_RANK", "")  # restored after the test: configure() below sets it
    assert loss_rank(job(pp=2), 4) == 2 and loss_rank(job(pp=4), 8) == 6 and loss_rank(job(pp=1), 4) == 0
    assert loss_rank(job(pp=2, schedule="ZBVZeroBubble"), 4) == 0  # V schedules end on rank 0
    consoles = {rank: ConsoleFilter(rank, 4, on_cpu=True, requested=frozenset()) for rank in range(4)}
    for console in consoles.values():
        console.configure(job(pp=2))
    assert [rank for rank, c in consoles.items() if c.logs] == [2]
    assert os.environ["LOG_RANK"] == "2"  # TorchTitan's "loss is not visible" check sees it
    # a first stage's step line carries no loss (-1): dropped, the last stage's rank shows the loss
    consoles[0].ranks = None  # LOG_RANK=all
    assert shown(consoles[0], "step:  1  loss: -1.00000  grad_norm:  3.1086  memory:  1.21GiB(5.14%)  tps: 232  "
                 "tflops: 0.01  mfu: 0.00%") is None
    assert shown(consoles[2], "step:  1  loss:  8.07713  grad_norm:  3.1086  memory:  1.21GiB(5.14%)  tps: 232  "
                 "tflops: 0.01  mfu: 0.00%").endswith("tflops: 0.01")


@pytest.mark.parametrize("message", [
    "HF assets path embedded does not exist!",
    "model.safetensors.index.json not found at hf_assets_path: embedded/model.safetensors.index.json.  Defaulting",
    "Error running lspci: [Errno 2] No such file or directory: 'lspci', fallback to use device_name",
    "Peak flops undefined for: CPU, fallback to A100",
    "[GC] Initial GC collection took 0.00 seconds",
    "ENV[TORCH_NCCL_ASYNC_ERROR_HANDLING] = 1 will be overridden to 3 based on job config",
    "Sleeping 2 seconds for other ranks to complete",
    "Process group destroyed",
])
def test_noise_is_dropped_on_a_cpu(message):
    console = ConsoleFilter(0, 1, on_cpu=True, requested=frozenset())
    assert shown(console, message, logging.WARNING) is None and shown(console, message) is None


def test_meaningful_lines_stay():
    cpu, gpu = ConsoleFilter(0, 1, True, frozenset()), ConsoleFilter(0, 1, False, frozenset())
    for message in ("HF assets path /data/tok does not exist!", "[GC] Performing periodic GC collection took 2.31 "
                    "seconds", "Local text dataset: 2099 documents from 3 files, dp rank 0 of 1"):
        assert shown(cpu, message, logging.WARNING) == message
    gpu_line = "step: 10  loss:  6.48267  grad_norm:  1.3163  memory: 40.1GiB(50%)  tps: 44,500  tflops: 400  mfu: 44.8%"
    assert shown(gpu, gpu_line) == gpu_line  # MFU means something on a GPU
    assert shown(gpu, "Peak flops undefined for: CPU, fallback to A100", logging.WARNING) is not None


def test_cpu_lines_are_explained():
    console = ConsoleFilter(0, 1, on_cpu=True, requested=frozenset())
    console.configure(job(dump="/tmp/run"))
    assert shown(console, "Peak FLOPS used for computing MFU: 3.120e+14") == CPU_MFU_EXPLAINED
    colored = ("\x1b[31mstep:  1  \x1b[32mloss:  8.07713  \x1b[36mtflops: 0.01  \x1b[35mmfu: 0.00%\x1b[39m")
    assert shown(console, colored) == "\x1b[31mstep:  1  \x1b[32mloss:  8.07713  \x1b[36mtflops: 0.01\x1b[39m"
    assert shown(console, "Mixed precision training is handled by AMP").startswith("Training in float32 on CPU")
    assert shown(console, "Building motif2 debugmodelwith {\n  \"_enforced\": \"x\",\n  \"dim\": 256\n}") == \
        "Building motif2 debugmodel (all model args in /tmp/run/model_args.json)"
    rec = record("torchtitan version: %s (0.0.0 means __version__ is not defined correctly).", logging.INFO, "0.2.2")
    assert console.filter(rec) and rec.getMessage() == "torchtitan version: 0.2.2"


@pytest.mark.parametrize("seconds,text", [(0.4, "0 s"), (45, "45 s"), (67, "1 min 07 s"), (3600, "1 h 00 min"),
                                          (7505, "2 h 05 min")])
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_time_left_comes_from_the_steps_after_the_first():
    report = RunReport.__new__(RunReport)  # the arithmetic only: no logger, files or console
    report.total_steps, report.start_time, report.first_step, report.first_step_end = 100, 0.0, 1, 30.0
    # step 1 took 30 s (start-up); steps 2..11 took 2 s each: 89 steps left at 2 s
    assert report.progress_line(11, 50.0) == "step 11/100 (11%), 50 s elapsed, about 2 min 58 s left"
