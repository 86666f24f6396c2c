"""What a training run prints: TorchTitan's log, minus its noise, from one rank, with progress and a summary.

TorchTitan logs through the root logger. The launcher (``python -m motif_titan.train``) calls ``install`` before
TorchTitan's ``main``; it adds a ``ConsoleFilter`` to that logger (a logging filter, not a patch: TorchTitan's
``init_logger`` replaces the logger's handlers but keeps its filters). The filter

* keeps INFO lines to one rank, TorchTitan's metrics rank: rank 0, or under pipeline parallelism the first rank of
  the last stage, the only one that knows the loss (until the trainer reads the job: rank 0). ``LOG_RANK=0,3``
  (TorchTitan's variable, global ranks here) picks others, ``LOG_RANK=all`` every rank. Warnings and errors pass
  on every rank;
* drops or explains the lines that mean nothing for this project (``NOISE`` lists them, each with its reason);
* turns TorchTitan's 20-line JSON dump of the model args into one line naming ``model_args.json``.

``MOTIF_RAW_LOG=1`` turns the filter off (TorchTitan's output as it is, every rank; no train.log).

``RunReport`` is the trainer's side (motif_titan.trainer.CurriculumTrainer drives it): a progress line with the
step count and the estimated time left (at each metrics step, and at least every ``HEARTBEAT_S`` seconds), a
summary at the end (loss first -> last, tokens/s, where the outputs went), and, once the trainer is built, the log
in ``<dump_folder>/train.log`` (another rank that LOG_RANK names: ``train_rank<r>.log``) plus ``job_config.json``
and ``model_args.json``. Nothing is written to the dump folder before the trainer is built, so a job refused at
start-up leaves it empty.
"""

import contextlib
import dataclasses
import json
import logging
import logging.handlers
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

LOG_RANK_ENV = "LOG_RANK"
RAW_ENV = "MOTIF_RAW_LOG"
HEARTBEAT_S = 15.0
LOG_FILE = "train.log"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# TorchTitan's lines that say nothing true or useful here, and why.
NOISE = {
    "embedded_assets": (re.compile(r"^HF assets path embedded does not exist!$"),
                        '"embedded" names the tokenizer packaged in motif_titan/assets, not a folder'),
    "embedded_index": (re.compile(r"^model\.safetensors\.index\.json not found at hf_assets_path: "
                                  r"(embedded|\S*motif_titan/assets/tokenizer)/"),
                       "the packaged tokenizer has no HF weights index, and needs none"),
    "gc_timing": (re.compile(r"^\[GC\] .* took 0\.\d+ seconds$"),
                  "a garbage collection pass under a second is not worth a line"),
    "nccl_env": (re.compile(r"^ENV\[TORCH_NCCL_ASYNC_ERROR_HANDLING\] = 1 will be overridden to 3 "),
                 "torchrun's default, which TorchTitan always changes (its flight recorder needs 3)"),
    "end_sleep": (re.compile(r"^Sleeping 2 seconds for other ranks to complete$"), "a fixed pause, not news"),
    "pg_destroyed": (re.compile(r"^Process group destroyed$"), "shutdown detail; the summary is the last line"),
}
CPU_NOISE = {
    "lspci": (re.compile(r"^Error running lspci: "), "TorchTitan looks for an NVIDIA GPU with lspci"),
    "peak_flops": (re.compile(r"^Peak flops undefined for: CPU"),
                   "TorchTitan knows no CPU peak FLOPS and falls back to an A100's; MFU is dropped on CPU"),
    "cuda_graphs": (re.compile(r"^CUDA graph capture is only supported on NVIDIA CUDA; using eager execution\.$"),
                    "TorchTitan 0.3 asks for CUDA graphs by default; there are none to capture on a CPU"),
}
# torchao's own logger, at import: its CUDA extensions do not load on a CPU-only machine, which nothing here uses
TORCHAO_CPU_NOISE = re.compile(r"^Failed to load \S+/torchao/_C\S*\.so: ")
# torch's pytree logger, when torchao (imported by TorchTitan 0.3 at start-up) registers its enums as constants:
# a deprecation notice to torchao's authors, not to the user
PYTREE_ENUM_NOTICE = re.compile(r"^<enum '\w+'> is an Enum subclass and is now natively supported by torch\.compile")
VERSION_NOTE = " (0.0.0 means __version__ is not defined correctly)."
CPU_MFU_LINE = re.compile(r"^Peak FLOPS used for computing MFU: ")
CPU_MFU_EXPLAINED = ("MFU is not shown on CPU (TorchTitan has no CPU peak FLOPS); tflops is the measured rate")
MFU_FIELD = re.compile(r"\s*(?:\x1b\[[0-9;]*m)?mfu: -?[0-9.]+%")
AMP_LINE = "Mixed precision training is handled by AMP"
MODEL_ARGS_LINE = re.compile(r"^Building (.*?)with (\{.*\})$", flags=re.S)
# training.mixed_precision_param = "float32" asks for no mixed precision: TorchTitan's warning that TP / PP without
# FSDP cannot have it says nothing
FP32_PP_TP_WARNING = re.compile(r"^Mixed precision training with TP or PP is only supported when FSDP/HSDP/CP is ")
PP_FIRST_STAGES_STEP_LINE = re.compile(r"step:\s*\d+\s+(?:\x1b\[[0-9;]*m)?loss:\s*-1\.0+\s")
# Python warnings of libraries that the first run triggers and that mean nothing to its user
QUIET_WARNINGS = (
    r"'set_vital' is deprecated",  # torchdata's StatefulDataLoader calls a deprecated torch function
)
CPU_QUIET_WARNINGS = (
    # training.mixed_precision_param = "float32": TorchTitan asks for an fp32 autocast, which CPUs refuse (fp32 is
    # what the run wants)
    r"In CPU autocast, but the target dtype is not supported",
    # DTensor's random ops on a CPU mesh: explained once by CPU_SHARDED_INIT_NOTE
    r"DTensor random operators may not have complete support on cpu device mesh",
    r"DTensor manual_seed\(\) may not have complete support on cpu device mesh",
)
CPU_SHARDED_INIT_NOTE = ("On CPU, DTensor's random ops draw each rank's shard of freshly initialized weights on its "
                         "own, so they are not a single-rank run's; to compare layouts, start them from one seed "
                         "checkpoint (--checkpoint.create_seed_checkpoint)")


def parse_log_ranks(spec: str | None, world_size: int) -> frozenset[int] | None:
    """The ranks LOG_RANK names (None: every rank; an empty frozenset: unset, take the default). Ranks at or above
    the world size are ignored, as torchrun's --local-ranks-filter ignores them (a LOG_RANK exported for a larger
    job must not stop a smaller one)."""
    from motif_titan.config_checks import ConfigError

    if spec is None or not spec.strip():
        return frozenset()
    if spec.strip().lower() == "all":
        return None
    try:
        ranks = frozenset(int(part) for part in spec.split(","))
    except ValueError:
        ranks = frozenset({-1})
    if min(ranks) < 0:
        raise ConfigError(f"{LOG_RANK_ENV} = {spec!r}; allowed: comma-separated ranks (e.g. 0,1), or all")
    return frozenset(rank for rank in ranks if rank < world_size)


def loss_rank(job_config, world_size: int) -> int:
    """TorchTitan's metrics rank: 0, or under pipeline parallelism the first rank of the last stage (V schedules
    end on rank 0)."""
    pp = job_config.parallelism.pipeline_parallel_degree
    if pp <= 1 or job_config.parallelism.pipeline_parallel_schedule == "ZBVZeroBubble":
        return 0
    return (world_size // pp) * (pp - 1)


class ConsoleFilter(logging.Filter):
    """On the root logger: which records a rank shows, and in what words (see the module docstring)."""

    def __init__(self, rank: int, world_size: int, on_cpu: bool, requested: frozenset[int] | None):
        super().__init__("motif_titan.console")
        self.rank, self.world_size, self.on_cpu = rank, world_size, on_cpu
        self.requested = requested  # None: all ranks; empty: the default
        self.ranks = frozenset({0}) if requested is not None and not requested else requested
        self.pp = False
        self.fp32_params = self.fp32_on_cpu = False
        self.model_args_file: Path | None = None
        self.noise = {**NOISE, **(CPU_NOISE if on_cpu else {})}

    def configure(self, job_config) -> None:
        """What the job adds: the loss rank under PP, the dump folder, the precision."""
        self.pp = job_config.parallelism.pipeline_parallel_degree > 1
        if self.requested is not None and not self.requested:
            self.ranks = frozenset({loss_rank(job_config, self.world_size)})
            if self.pp:  # TorchTitan warns that the loss is not visible unless LOG_RANK names its rank: it is
                os.environ[LOG_RANK_ENV] = ",".join(map(str, sorted(self.ranks)))
        self.fp32_params = job_config.training.mixed_precision_param == "float32"
        self.fp32_on_cpu = self.on_cpu and self.fp32_params
        self.model_args_file = Path(job_config.job.dump_folder).absolute() / "model_args.json"

    @property
    def logs(self) -> bool:
        return self.ranks is None or self.rank in self.ranks

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return not self._is_noise(record)
        if not self.logs:
            return False
        if self._is_noise(record):
            return False
        message = record.getMessage()
        rewritten = self._rewrite(message)
        if rewritten is None:
            return False
        if rewritten is not message:
            record.msg, record.args = rewritten, None
        return True

    def _is_noise(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if self.fp32_params and FP32_PP_TP_WARNING.search(message):
            return True
        return any(pattern.search(message) for pattern, _ in self.noise.values())

    def _rewrite(self, message: str) -> str | None:
        """The line to show instead (the same object: unchanged; None: drop it)."""
        if message.startswith("torchtitan version: ") and message.endswith(VERSION_NOTE) and \
                not message.startswith("torchtitan version: 0.0.0"):
            return message[:-len(VERSION_NOTE)]
        if self.on_cpu and CPU_MFU_LINE.search(message):
            return CPU_MFU_EXPLAINED
        if self.on_cpu and "mfu: " in message and "loss: " in message:
            message = MFU_FIELD.sub("", message)
        if self.pp and PP_FIRST_STAGES_STEP_LINE.search(message):
            return None  # a first or middle pipeline stage: no loss to show (the last stage's rank logs it)
        if self.fp32_on_cpu and message == AMP_LINE:
            return 'Training in float32 on CPU (training.mixed_precision_param = "float32": no autocast)'
        match = MODEL_ARGS_LINE.search(message) if message.startswith("Building ") else None
        if match:
            where = f"all model args in {self.model_args_file}" if self.model_args_file else \
                json.dumps(json.loads(match.group(2)))
            return f"Building {match.group(1).strip()} ({where})"
        return message


_installed: ConsoleFilter | None = None


def install(on_cpu: bool) -> ConsoleFilter | None:
    """Add the console filter to the root logger and quiet ``QUIET_WARNINGS`` (once per process; RANK and
    WORLD_SIZE must be set). None when MOTIF_RAW_LOG=1."""
    global _installed
    if _installed is not None or os.environ.get(RAW_ENV, "") not in ("", "0"):
        return _installed
    rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    requested = parse_log_ranks(os.environ.get(LOG_RANK_ENV), world_size)
    for message in QUIET_WARNINGS + (CPU_QUIET_WARNINGS if on_cpu else ()):
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
    _installed = ConsoleFilter(rank, world_size, on_cpu, requested)
    logging.getLogger().addFilter(_installed)
    if on_cpu:
        logging.getLogger("torchao").addFilter(lambda record: not TORCHAO_CPU_NOISE.match(record.getMessage()))
    logging.getLogger("torch.utils._pytree").addFilter(lambda record: not PYTREE_ENUM_NOTICE.match(record.getMessage()))
    return _installed


def installed() -> ConsoleFilter | None:
    return _installed


def duration(seconds: float) -> str:
    """45 s, 1 min 07 s, 2 h 05 min."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class _PlainFormatter(logging.Formatter):
    """The console's format, without TorchTitan's color codes (for the log file)."""

    def __init__(self, console_formatter: logging.Formatter | None):
        super().__init__()
        self.console_formatter = console_formatter or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        return ANSI.sub("", self.console_formatter.format(record))


class RunReport:
    """Progress lines, the log file and the end-of-run summary of one trainer (see the module docstring)."""

    def __init__(self, job_config, logger: logging.Logger):
        self.job_config, self.logger = job_config, logger
        self.dump = Path(job_config.job.dump_folder).absolute()
        self.total_steps = job_config.training.steps
        rank, world_size = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = rank
        console = installed()
        if console is not None:
            console.configure(job_config)
        self.logs = console is None or console.logs
        if console is not None and console.on_cpu and world_size > 1:
            logger.info(CPU_SHARDED_INIT_NOTE)
        # the rank that knows the loss prints progress and the summary
        self.reports = rank == loss_rank(job_config, world_size)
        self.log_file: Path | None = None
        # the log is held in memory until the trainer is built, so a refused job writes nothing
        self._buffer = None
        if self.logs and console is not None:
            self._buffer = logging.handlers.MemoryHandler(capacity=1 << 30, flushLevel=logging.CRITICAL + 1,
                                                          target=None, flushOnClose=False)
            logging.getLogger().addHandler(self._buffer)
        self.first_step: int | None = None
        self.start_time = self.first_step_end = self.last_line = time.perf_counter()

    # -- once the trainer is built --------------------------------------------------------------------------------

    def trainer_built(self, trainer) -> None:
        """Write job_config.json and model_args.json (rank 0) and start the log file (each logging rank)."""
        if self.rank == 0:
            self.dump.mkdir(parents=True, exist_ok=True)
            to_dict = getattr(self.job_config, "to_dict", None)
            if callable(to_dict):
                (self.dump / "job_config.json").write_text(json.dumps(to_dict(), indent=2, default=str) + "\n")
            model_args = getattr(trainer, "model_args", None)
            if dataclasses.is_dataclass(model_args):
                args = {k: v for k, v in dataclasses.asdict(model_args).items() if not k.startswith("_")}
                (self.dump / "model_args.json").write_text(json.dumps(args, indent=2, default=str) + "\n")
        if self._buffer is not None:
            root = logging.getLogger()
            self.dump.mkdir(parents=True, exist_ok=True)
            self.log_file = self.dump / (LOG_FILE if self.reports else f"train_rank{self.rank}.log")
            console_handler = next((h for h in root.handlers if h is not self._buffer), None)
            file_handler = logging.FileHandler(self.log_file, mode="a", encoding="utf-8")
            file_handler.setFormatter(_PlainFormatter(console_handler.formatter if console_handler else None))
            self._buffer.setTarget(file_handler)
            self._buffer.flush()
            root.removeHandler(self._buffer)
            self._buffer.close()
            self._buffer = None
            root.addHandler(file_handler)

    # -- while training -------------------------------------------------------------------------------------------

    def train_started(self) -> None:
        self.start_time = self.last_line = time.perf_counter()

    def after_step(self, step: int, logged_metrics: bool) -> None:
        """A progress line at each metrics step after the first and whenever HEARTBEAT_S passed without one (none
        at the last step: the summary follows)."""
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.first_step_end, self.last_line = step, now, now
            return
        if step < self.total_steps and (logged_metrics or now - self.last_line >= HEARTBEAT_S):
            if self.reports:
                self.logger.info(self.progress_line(step, now))
            self.last_line = now

    def progress_line(self, step: int, now: float) -> str:
        per_step = (now - self.first_step_end) / (step - self.first_step)
        left = per_step * (self.total_steps - step)
        return (f"step {step}/{self.total_steps} ({100 * step // self.total_steps}%), "
                f"{duration(now - self.start_time)} elapsed, about {duration(left)} left")

    # -- at the end -----------------------------------------------------------------------------------------------

    def summary(self, trainer) -> None:
        """Log the run's summary (loss first -> last, tokens/s, outputs); remove TorchTitan's comm_traces folder
        if nothing was dumped in it."""
        if self.rank == 0:
            traces = self.dump / self.job_config.comm.save_traces_folder
            try:
                traces.rmdir()  # only when empty: flight-recorder dumps of a timed-out collective are kept
            except OSError:
                pass
        if not self.reports:
            return
        elapsed = time.perf_counter() - self.start_time
        processor = trainer.metrics_processor
        first, last = getattr(processor, "first_logged", None), getattr(processor, "last_logged", None)
        ran = f"{trainer.step} steps" if (self.first_step or 1) == 1 else f"steps {self.first_step}-{trainer.step}"
        parts = [f"Done: {ran} in {duration(elapsed)}"]  # steps k-n: resumed at step k
        if first is not None and last is not None:
            parts.append(f"loss {first.loss:.5f} (step {first.step}) -> {last.loss:.5f} (step {last.step})")
            if last.step > first.step and last.tokens is not None and first.tokens is not None:
                rate = (last.tokens - first.tokens) / max(last.time - first.time, 1e-9)
                parts.append(f"{rate:,.0f} tokens/s over steps {first.step + 1}-{last.step}")
        self.logger.info(", ".join(parts))
        self.logger.info(f"Outputs in {self.dump}: {', '.join(self.outputs()) or 'none'}")

    def outputs(self) -> list[str]:
        found = []
        if self.log_file is not None:
            found.append(f"{self.log_file.name} (this log)")
        tb = self.dump / self.job_config.metrics.save_tb_folder
        if self.job_config.metrics.enable_tensorboard and tb.is_dir():
            found.append(f"{tb.name}/ (TensorBoard: tensorboard --logdir {tb})")
        for name in ("job_config.json", "model_args.json"):
            if (self.dump / name).is_file():
                found.append(name)
        checkpoints = self.dump / self.job_config.checkpoint.folder
        if self.job_config.checkpoint.enable and checkpoints.is_dir():
            found.append(f"{self.job_config.checkpoint.folder}/ (checkpoints)")
        return found


class TensorProgress:
    """A command-line tool's progress over tensors (upscale, export): tqdm when installed, else a plain counter on
    stderr."""

    def __init__(self, total: int, desc: str):
        try:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr)
        except ImportError:
            self._bar = None
        self.total, self.done, self.desc = total, 0, desc

    def update(self, key: str) -> None:
        self.done += 1
        if self._bar is not None:
            self._bar.update(1)
        else:
            print(f"\r{self.desc}: {self.done}/{self.total} tensors", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            print(file=sys.stderr)


def command_line_main(prog: str, run: Callable[[], object], sigterm: bool = True) -> int:
    """How motif_titan's command-line tools (upscale, export, eval, pretokenize) end: 0 when ``run`` returns; bad
    input (a ValueError or OSError, raised before any work) is one ``<prog>: error: ...`` line on stderr and status
    2. With ``sigterm``, SIGTERM (what a preempting scheduler sends) becomes SystemExit(143) inside ``run``, so the
    cleanup an error runs runs then too: no temporary output is left."""
    from motif_titan.infra.atomic_output import terminate_on_sigterm

    try:
        with terminate_on_sigterm() if sigterm else contextlib.nullcontext():
            run()
    except (ValueError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    return 0
