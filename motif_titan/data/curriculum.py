"""The ``[curriculum]`` TOML section and the data-mixture schedule it describes.

    [curriculum]
    mode = "pretrain"            # "pretrain" (packed windows) | "sft" (chat samples, packed rows, prompt labels -100)
    unit = "steps"               # phase ranges count trainer steps | "tokens" (global tokens before the step)
    seed = 0

    [[curriculum.domains]]
    name = "web"
    sources = ["data/web/", "more.parquet", "hf:/local/hf_dataset_dir", "embedded:prose", "shards/web_tokens"]
    text_field = "text"          # pretrain: the text column of jsonl / parquet / HF sources
    streaming = false            # true: read the (all 'hf:') sources as streams, see document_sources

    [[curriculum.phases]]
    start = 0                    # in `unit`; phases must not overlap
    end = 1000
    start_weights = { web = 0.7, math = 0.2, code = 0.1 }   # domains left out weigh 0
    end_weights = { web = 0.4, math = 0.3, code = 0.3 }     # default: start_weights
    cap = { domains = ["math"], max_share = 0.1 }            # optional: the group stays under this token share

The weights of a phase are interpolated linearly between its start and end, like an LR scheduler:
``w(t) = (1 - a) w_start + a w_end`` with ``a = (t - start) / (end - start)``. Before the first phase the first
phase's start weights hold, after a phase its end weights hold until the next one starts. Weights need not sum
to 1 (each end is normalized before the interpolation, so shares move linearly), zero weights are allowed, but
at every t some domain must weigh more than 0.

A cap keeps a group of domains under ``max_share`` of the phase's tokens: the group's weight is scaled down to
that share when it is above it, and the mixer never lets the group's realized share of the items it drew in the
phase exceed it (items are equal-token windows in pretraining, so this is a token share).

The ramps (batch size, sequence length) are described in :mod:`motif_titan.data.ramps`. Everything here is
validated by :func:`parse_curriculum`, which raises naming the TOML field before any data is read.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MODES = ("pretrain", "sft")
UNITS = ("steps", "tokens")
CHAT_TEMPLATES = ("simple", "tokenizer")
DOMAIN_KEYS = ("name", "sources", "text_field", "messages_field", "prompt_field", "response_field", "split",
               "streaming")
DOMAIN_STRING_KEYS = ("text_field", "messages_field", "prompt_field", "response_field", "split")
PHASE_KEYS = ("start", "end", "start_weights", "end_weights", "cap")
CAP_KEYS = ("domains", "max_share")


@dataclass
class CurriculumConfig:
    """The ``[curriculum]`` section (added to TorchTitan's JobConfig by ``motif_titan.job_config``). Without
    domains the TrainSpec's dataloader is the plain text dataloader (``training.dataset``)."""

    mode: str = "pretrain"
    """"pretrain": documents packed into seq_len + 1 windows; "sft": chat samples packed into rows."""
    unit: str = "steps"
    """What phase ranges count: "steps" (trainer steps, 1-based) or "tokens" (global tokens before the step)."""
    seed: int = 0
    domains: list[dict[str, Any]] = field(default_factory=list)
    """[[curriculum.domains]] tables: name, sources, text_field (pretrain), messages_field / prompt_field /
    response_field (sft), split (HF sources), streaming (HF sources read as streams)."""
    phases: list[dict[str, Any]] = field(default_factory=list)
    """[[curriculum.phases]] tables: start, end, start_weights, end_weights, cap."""
    chat_template: str = "simple"
    """SFT: "simple" (see motif_titan.data.sft) or "tokenizer" (the tokenizer's template in model.hf_assets_path:
    chat_template.jinja, chat_template.json or tokenizer_config.json's chat_template key)."""
    batch_ramp_start_tokens: int = 0
    """Global tokens per step at the start of the batch-size ramp (0 = no ramp); the ramp ends at
    training.global_batch_size * training.seq_len tokens."""
    batch_ramp_steps: list[int] = field(default_factory=list)
    """[first, last] step of the batch-size ramp."""
    seq_len_ramp_start: int = 0
    """Row length at the start of the sequence-length ramp (0 = no ramp); it doubles up to training.seq_len."""
    seq_len_ramp_steps: list[int] = field(default_factory=list)
    """[first, last] step of the sequence-length ramp."""


@dataclass(frozen=True)
class DomainSpec:
    name: str
    sources: tuple[str, ...]
    text_field: str = "text"
    messages_field: str = "messages"
    prompt_field: str = "prompt"
    response_field: str = "response"
    split: str = "train"
    streaming: bool = False
    """Open the ``hf:`` sources with ``streaming=True`` and read them in stream order (see
    :class:`motif_titan.data.packing.StreamCursor`); every source of the domain must then be ``hf:``."""


@dataclass(frozen=True)
class DomainCap:
    domains: tuple[int, ...]
    """Indices of the capped domains."""
    max_share: float


@dataclass(frozen=True)
class Phase:
    start: int
    end: int
    start_weights: tuple[float, ...]
    end_weights: tuple[float, ...]
    cap: DomainCap | None = None


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"curriculum.{name} = {value!r}; allowed: {allowed}")


def apply_cap(weights: Sequence[float], cap: DomainCap | None) -> tuple[float, ...]:
    """Scale the capped group down so that its share of the total is at most ``cap.max_share``."""
    if cap is None:
        return tuple(weights)
    group = sum(weights[i] for i in cap.domains)
    rest = sum(weights) - group
    if group <= cap.max_share * (group + rest):
        return tuple(weights)
    scale = cap.max_share * rest / ((1.0 - cap.max_share) * group)  # group > 0 here; max_share < 1
    return tuple(w * scale if i in cap.domains else w for i, w in enumerate(weights))


class CurriculumSchedule:
    """w(t) over the phases (see the module docstring): normalized weights per domain at a point t."""

    def __init__(self, domain_names: Sequence[str], phases: Sequence[Phase]) -> None:
        self.domain_names = tuple(domain_names)
        self.phases = tuple(phases)

    def phase_index(self, t: float) -> int:
        """The phase whose weights apply at t: the one containing it, else the last one ended before it,
        else the first."""
        index = 0
        for i, phase in enumerate(self.phases):
            if phase.start <= t:
                index = i
        return index

    def raw_weights(self, t: float) -> tuple[float, ...]:
        phase = self.phases[self.phase_index(t)]
        a = min(max((t - phase.start) / (phase.end - phase.start), 0.0), 1.0)
        mixed = [(1.0 - a) * s + a * e for s, e in zip(phase.start_weights, phase.end_weights)]
        return apply_cap(mixed, phase.cap)

    def weights(self, t: float) -> tuple[float, ...]:
        raw = self.raw_weights(t)
        total = sum(raw)
        return tuple(w / total for w in raw)

    def cap_at(self, t: float) -> tuple[int, DomainCap] | None:
        """(phase index, cap) when t lies inside a capped phase."""
        index = self.phase_index(t)
        phase = self.phases[index]
        if phase.cap is not None and phase.start <= t < phase.end:
            return index, phase.cap
        return None


def _check_table(where: str, raw: Any, keys: Sequence[str]) -> None:
    """``raw`` must be a TOML table whose keys are among ``keys``."""
    if not isinstance(raw, dict):
        _fail(where, raw, "a table with keys " + ", ".join(keys))
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        _fail(f"{where}.{unknown[0]}", raw[unknown[0]], "keys " + ", ".join(keys))


def _parse_domain(i: int, raw: Any) -> DomainSpec:
    where = f"domains[{i}]"
    _check_table(where, raw, DOMAIN_KEYS)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        _fail(f"{where}.name", name, "a non-empty string")
    sources = raw.get("sources")
    if isinstance(sources, str):
        sources = [sources]
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) and s for s in sources):
        _fail(f"{where}.sources", sources, "a non-empty list of paths, 'hf:PATH' or 'embedded:NAME'")
    for key in DOMAIN_STRING_KEYS:
        if key in raw and (not isinstance(raw[key], str) or not raw[key]):
            _fail(f"{where}.{key}", raw[key], "a non-empty string")
    streaming = raw.get("streaming", False)
    if not isinstance(streaming, bool):
        _fail(f"{where}.streaming", streaming, "true or false (a bool; true reads the domain's 'hf:' sources as "
              "streams)")
    if streaming:
        # A streamed domain has no length and no random access, an in-memory one is shuffled by index: one cursor
        # cannot read both, so a domain is one or the other (mix them across domains instead).
        for j, source in enumerate(sources):
            if not source.startswith("hf:"):
                _fail(f"{where}.sources[{j}]", source, f"'hf:PATH' sources only, with curriculum.{where}.streaming"
                      " = true (files, token shards and embedded corpora are read into memory: put them in another"
                      " domain, or set streaming = false)")
    return DomainSpec(name=name, sources=tuple(sources), streaming=streaming,
                      **{k: raw[k] for k in DOMAIN_STRING_KEYS if k in raw})


def _parse_weights(where: str, raw: Any, names: Sequence[str]) -> tuple[float, ...]:
    if not isinstance(raw, dict) or not raw:
        _fail(where, raw, f"a table of domain = weight over {list(names)}")
    for name, weight in raw.items():
        if name not in names:
            _fail(f"{where}.{name}", weight, f"weights of the domains {list(names)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight != weight or weight < 0:
            _fail(f"{where}.{name}", weight, "a number >= 0")
    return tuple(float(raw.get(name, 0.0)) for name in names)


def _parse_cap(where: str, raw: Any, names: Sequence[str]) -> DomainCap:
    if not isinstance(raw, dict) or set(raw) != set(CAP_KEYS):
        _fail(where, raw, "{ domains = [names], max_share = share in (0, 1) }")
    domains = raw["domains"]
    if not isinstance(domains, list) or not domains:
        _fail(f"{where}.domains", domains, f"a non-empty list of {list(names)}")
    for name in domains:
        if name not in names:
            _fail(f"{where}.domains", domains, f"names from {list(names)}")
    share = raw["max_share"]
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share < 1:
        _fail(f"{where}.max_share", share, "a number with 0 < max_share < 1")
    return DomainCap(domains=tuple(names.index(n) for n in dict.fromkeys(domains)), max_share=float(share))


def _parse_phase(i: int, raw: Any, names: Sequence[str]) -> Phase:
    where = f"phases[{i}]"
    _check_table(where, raw, PHASE_KEYS)
    for key in ("start", "end"):
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            _fail(f"{where}.{key}", value, "an integer >= 0")
    if raw["end"] <= raw["start"]:
        _fail(f"{where}.end", raw["end"], f"> start ({raw['start']})")
    start_weights = _parse_weights(f"{where}.start_weights", raw.get("start_weights"), names)
    end_weights = (_parse_weights(f"{where}.end_weights", raw["end_weights"], names)
                   if "end_weights" in raw else start_weights)
    cap = _parse_cap(f"{where}.cap", raw["cap"], names) if "cap" in raw else None
    # Each end is normalized, then interpolated: the shares move linearly. The uncapped weight is linear in t
    # inside a phase and never negative, so some domain can be drawn everywhere in the phase (and in the hold
    # after it) iff it can at both ends, after the cap.
    for key, weights, t in (("start_weights", start_weights, raw["start"]), ("end_weights", end_weights, raw["end"])):
        if sum(apply_cap(weights, cap)) <= 0:
            why = " after the cap (no uncapped domain weighs > 0)" if sum(weights) > 0 else ""
            _fail(f"{where}.{key}", raw.get(key, raw.get("start_weights")),
                  f"weights that sum to > 0 (at {t} no domain could be drawn{why})")
    return Phase(raw["start"], raw["end"], _normalized(start_weights), _normalized(end_weights), cap)


def _normalized(weights: tuple[float, ...]) -> tuple[float, ...]:
    total = sum(weights)
    return tuple(w / total for w in weights)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_curriculum_fields(config: CurriculumConfig) -> None:
    """Types and ranges of the section's scalar fields, and that nothing but domains configures a curriculum
    without domains (it would be ignored: the text dataloader of ``training.dataset`` runs). The ramps' ranges
    against ``[training]`` are checked by :func:`motif_titan.data.ramps.validate_ramps`, the tables by
    :func:`parse_curriculum`."""
    if config.mode not in MODES:
        _fail("mode", config.mode, list(MODES))
    if config.unit not in UNITS:
        _fail("unit", config.unit, list(UNITS))
    if config.chat_template not in CHAT_TEMPLATES:
        _fail("chat_template", config.chat_template, list(CHAT_TEMPLATES))
    if not _is_int(config.seed) or config.seed < 0:
        _fail("seed", config.seed, "an integer >= 0")
    for name in ("batch_ramp_start_tokens", "seq_len_ramp_start"):
        value = getattr(config, name)
        if not _is_int(value) or value < 0:
            _fail(name, value, "an integer: 0 (off) or > 0")
    for name in ("batch_ramp_steps", "seq_len_ramp_steps"):
        steps = getattr(config, name)
        if not isinstance(steps, list) or not all(_is_int(s) for s in steps):
            _fail(name, steps, "[first, last] steps (integers) with 1 <= first < last, or [] (no ramp)")
    for name in ("domains", "phases"):
        if not isinstance(getattr(config, name), list):
            _fail(name, getattr(config, name), f"[[curriculum.{name}]] tables")
    if not config.domains:
        defaults = CurriculumConfig()
        for name in ("mode", "unit", "seed", "phases", "chat_template", "batch_ramp_start_tokens",
                     "batch_ramp_steps", "seq_len_ramp_start", "seq_len_ramp_steps"):
            if getattr(config, name) != getattr(defaults, name):
                _fail(name, getattr(config, name), f"the default {getattr(defaults, name)!r} without "
                      "[[curriculum.domains]] tables (without domains the text dataloader of training.dataset "
                      "runs and ignores [curriculum])")


def parse_curriculum(config: CurriculumConfig) -> tuple[tuple[DomainSpec, ...], CurriculumSchedule]:
    """Validate the section's fields, domains and phases; raise naming the field and the allowed values."""
    validate_curriculum_fields(config)
    if not config.domains:
        _fail("domains", config.domains, "at least one [[curriculum.domains]] table")
    domains = tuple(_parse_domain(i, raw) for i, raw in enumerate(config.domains))
    names = [d.name for d in domains]
    for i, name in enumerate(names):
        if name in names[:i]:
            _fail(f"domains[{i}].name", name, "a name no other domain has")
    if not config.phases:
        _fail("phases", config.phases, "at least one [[curriculum.phases]] table")
    phases = [_parse_phase(i, raw, names) for i, raw in enumerate(config.phases)]
    order = sorted(range(len(phases)), key=lambda i: phases[i].start)
    for before, after in zip(order, order[1:]):
        if phases[after].start < phases[before].end:
            _fail(f"phases[{after}].start", phases[after].start,
                  f">= {phases[before].end}, the end of phases[{before}] (phases must not overlap)")
    return domains, CurriculumSchedule(names, [phases[i] for i in order])
