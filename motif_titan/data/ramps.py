"""Batch-size and sequence-length ramps: the shape of every training step, as a pure function of the step.

Design (the README's "Curriculum data" section states the costs):

* Every micro-batch holds the same number of tokens per DP rank, ``local_batch_size * seq_len``. A micro-batch
  is ``rows`` rows of ``row_len`` tokens with ``rows * row_len == local_batch_size * seq_len``.
* Batch-size ramp: the global tokens per step grow linearly from ``batch_ramp_start_tokens`` (at the ramp's first
  step) to ``training.global_batch_size * seq_len`` (at its last step) by changing the number of micro-batches
  per step (gradient accumulation), rounded to whole micro-batches. TorchTitan's trainer divides the summed loss
  by the global count of valid labels over all micro-batches of the step, so a step with more micro-batches is
  still the mean over its tokens. A dataloader cannot change how many micro-batches the trainer draws:
  ``motif_titan.trainer.CurriculumTrainer`` sets ``gradient_accumulation_steps`` from this schedule before each
  step, and the dataloader refuses to run a batch ramp under any other trainer.
* Sequence-length ramp: the row length doubles from ``seq_len_ramp_start`` up to ``training.seq_len`` as the
  linear ramp passes each power-of-two multiple (4096 -> 8192 -> 16384), and the rows per micro-batch shrink in
  proportion. Rows really are shorter (no masking, no wasted FLOPs); a compiled model sees one new shape per
  length (3 recompiles for 4096 -> 16384).

Both the trainer (for micro-batches per step) and every dataloader worker (to know which step, and how many
tokens before it, each micro-batch belongs to) evaluate the same :class:`BatchSchedule`, so the data stays keyed
to steps however far the loader prefetches, and a resumed run sees the same shapes.
"""

from dataclasses import dataclass


def _interpolate(step: int, first: int, last: int, start: float, end: float) -> float:
    a = min(max((step - first) / (last - first), 0.0), 1.0)
    return (1.0 - a) * start + a * end


@dataclass(frozen=True)
class BatchSchedule:
    dp_world_size: int
    local_batch_size: int
    seq_len: int
    global_batch_size: int
    """Rows of seq_len tokens per step over all DP ranks at the end of any batch ramp."""
    batch_ramp_start_tokens: int = 0
    batch_ramp_steps: tuple[int, int] | None = None
    seq_len_ramp_start: int = 0
    seq_len_ramp_steps: tuple[int, int] | None = None

    @property
    def micro_batch_tokens(self) -> int:
        """Tokens of one micro-batch over all DP ranks."""
        return self.dp_world_size * self.local_batch_size * self.seq_len

    @property
    def final_micro_batches(self) -> int:
        return self.global_batch_size // (self.local_batch_size * self.dp_world_size)

    @property
    def batch_ramped(self) -> bool:
        return self.batch_ramp_start_tokens > 0

    def micro_batches(self, step: int) -> int:
        """Micro-batches (gradient accumulation steps) of trainer step ``step`` (1-based)."""
        if not self.batch_ramped:
            return self.final_micro_batches
        first, last = self.batch_ramp_steps
        final_tokens = self.final_micro_batches * self.micro_batch_tokens
        tokens = _interpolate(step, first, last, self.batch_ramp_start_tokens, final_tokens)
        return max(1, int(tokens / self.micro_batch_tokens + 0.5))  # nearest, halves up

    def row_len(self, step: int) -> int:
        if not self.seq_len_ramp_start:
            return self.seq_len
        first, last = self.seq_len_ramp_steps
        target = _interpolate(step, first, last, self.seq_len_ramp_start, self.seq_len)
        length = self.seq_len_ramp_start
        while length * 2 <= target + 1e-9:
            length *= 2
        return length

    def rows(self, step: int) -> int:
        """Rows per micro-batch and DP rank."""
        return self.local_batch_size * self.seq_len // self.row_len(step)

    def step_tokens(self, step: int) -> int:
        """Global tokens of step ``step``."""
        return self.micro_batches(step) * self.micro_batch_tokens


def validate_ramps(config, training, dp_world_size: int, sft: bool) -> BatchSchedule:
    """The BatchSchedule of ``[curriculum]`` ramps and ``[training]``; raise naming the field."""
    def fail(name, allowed):
        raise ValueError(f"curriculum.{name} = {getattr(config, name)!r}; allowed: {allowed}")

    local, seq_len = training.local_batch_size, training.seq_len
    global_rows = training.global_batch_size if training.global_batch_size > 0 else local * dp_world_size
    schedule_kwargs = {}
    micro_tokens = dp_world_size * local * seq_len
    final_tokens = global_rows * seq_len
    if config.batch_ramp_start_tokens:
        if not micro_tokens <= config.batch_ramp_start_tokens <= final_tokens:
            fail("batch_ramp_start_tokens", f"0 (off) or between one micro-batch over the DP ranks "
                 f"({micro_tokens} tokens) and the final global batch ({final_tokens} tokens = "
                 f"training.global_batch_size * training.seq_len)")
        schedule_kwargs.update(batch_ramp_start_tokens=config.batch_ramp_start_tokens,
                               batch_ramp_steps=_ramp_steps(config, "batch_ramp_steps"))
    elif config.batch_ramp_steps:
        fail("batch_ramp_steps", "[] unless curriculum.batch_ramp_start_tokens > 0")
    if config.seq_len_ramp_start:
        start = config.seq_len_ramp_start
        ratio = seq_len // start if start > 0 else 0
        if start <= 0 or seq_len % start or ratio < 2 or ratio & (ratio - 1):
            fail("seq_len_ramp_start", f"0 (off) or training.seq_len ({seq_len}) / 2^k for some k >= 1")
        if sft:
            fail("seq_len_ramp_start", "0 with curriculum.mode = 'sft' (SFT rows are training.seq_len long)")
        schedule_kwargs.update(seq_len_ramp_start=start, seq_len_ramp_steps=_ramp_steps(config, "seq_len_ramp_steps"))
    elif config.seq_len_ramp_steps:
        fail("seq_len_ramp_steps", "[] unless curriculum.seq_len_ramp_start > 0")
    return BatchSchedule(dp_world_size=dp_world_size, local_batch_size=local, seq_len=seq_len,
                         global_batch_size=global_rows, **schedule_kwargs)


def _ramp_steps(config, name: str) -> tuple[int, int]:
    steps = getattr(config, name)
    if len(steps) != 2 or not 1 <= steps[0] < steps[1]:
        raise ValueError(f"curriculum.{name} = {steps!r}; allowed: [first, last] steps with 1 <= first < last")
    return steps[0], steps[1]


@dataclass
class BatchClock:
    """Where the next micro-batch of a rank's stream falls: trainer step (1-based), its index in the step, and the
    global tokens of all steps before it. Advanced once per micro-batch; its state is checkpointed."""

    schedule: BatchSchedule
    step: int = 1
    micro_batch: int = 0
    tokens_before_step: int = 0

    def advance(self) -> None:
        self.micro_batch += 1
        if self.micro_batch == self.schedule.micro_batches(self.step):
            self.tokens_before_step += self.schedule.step_tokens(self.step)
            self.step += 1
            self.micro_batch = 0

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "micro_batch": self.micro_batch, "tokens_before_step": self.tokens_before_step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step, self.micro_batch, self.tokens_before_step = (
            state["step"], state["micro_batch"], state["tokens_before_step"])
