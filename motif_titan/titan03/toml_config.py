"""Our TOML layout (the sections and keys of TorchTitan 0.2.2's JobConfig plus motif_titan's ``[curriculum]`` and the
Muon fields of ``[optimizer]``) read into TorchTitan 0.3's ``Trainer.Config``, so that the same files train under both
versions: ``python -m motif_titan.train --job.config_file train_configs/X.toml``.

Each key has one destination in 0.3's config (``SECTIONS``: a field of a 0.3 config object of the same name unless the
table says otherwise). A key without one is refused before anything is built, naming the file, the key and what the
section takes; so is a key 0.3 has no place for yet (``NOT_ON_03``, with the reason).
"""

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from torchtitan.components.loss import CrossEntropyLoss
from torchtitan.components.optimizer import LRSchedulersContainer, OptimizersContainer, ParamGroupConfig
from torchtitan.config import CommConfig, CompileConfig, ParallelismConfig, TrainingConfig
from torchtitan.config.configs import DebugConfig
from torchtitan.distributed.activation_checkpoint import FullAC, SelectiveAC
from torchtitan.tools.profiler import Profiler

from motif_titan.data.curriculum import CurriculumConfig
from motif_titan.data.text_dataloader import hf_assets_dir
from motif_titan.infra.nonfinite_guard import GuardConfig
from motif_titan.optim.settings import MUON_NAMES, TORCHTITAN_NAMES

from . import MODEL_NAME, model_registry
from .checkpoint import IntegrityCheckpointManager
from .dataloader import CurriculumDataLoader
from .optimizer import MuonOptimizers
from .parallelize import SPMD_BACKEND
from .trainer import ComponentMetrics, MotifTrainer

# section -> the field of Trainer.Config its keys are fields of
PLAIN_SECTIONS = {"metrics": "metrics", "lr_scheduler": "lr_scheduler", "parallelism": "parallelism",
                  "checkpoint": "checkpoint", "compile": "compile", "comm": "comm", "debug": "debug",
                  "profiling": "profiler"}
TRAINING_TO_DATALOADER = ("dataset", "dataset_path")
NOT_ON_03 = {
    ("validation", None): "validation runs on TorchTitan 0.2.2",
}
FLOAT8_KEYS = ("recipe_name", "filter_fqns", "emulate")
ACCEPTED_AS_IS = {("job", "description"), ("job", "print_config")}


class TomlConfigError(ValueError):
    pass


def _refuse(path: Path, key: str, why: str) -> None:
    raise TomlConfigError(f"{path}: [{key.split('.')[0]}] {key.split('.', 1)[-1]} ({key}): {why}")


def _field_names(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init and not f.name.startswith("_")]


def _fill(path: Path, section: str, values: dict, target, skip: tuple = (), also: tuple = ()) -> None:
    """Set ``values`` (one section) on the 0.3 config object ``target``; ``also``: keys of the section read
    elsewhere (named in the error)."""
    allowed = [n for n in _field_names(type(target)) if n not in skip] + list(also)
    for key, value in values.items():
        if key in skip:
            continue
        if key not in allowed:
            _refuse(path, f"{section}.{key}", f"unknown key; [{section}] takes {sorted(allowed)} under TorchTitan 0.3")
        if isinstance(getattr(target, key, None), list) and not isinstance(value, list):
            value = [value]  # one value given on the command line for a list field
        setattr(target, key, value)


def _build(path: Path, section: str, values: dict, cls):
    """``cls(**values)`` for a plain dataclass section (its own checks run), unknown keys refused first."""
    defaults = cls()
    _fill(path, section, values, defaults)  # refuses unknown keys, takes one command-line value for a list
    return cls(**{key: getattr(defaults, key) for key in values})


def read_toml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise TomlConfigError(f"{path}: not valid TOML: {e}") from None


def trainer_config_from_toml(path: str | Path, overrides: dict | None = None) -> MotifTrainer.Config:
    """The 0.3 ``Trainer.Config`` of one of our TOML files (see the module docstring); ``overrides`` are
    ``{"section.key": value}`` pairs applied on top, as ``--section.key value`` flags are on 0.2.2."""
    path = Path(path)
    doc = read_toml(path)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        doc.setdefault(section, {})[key] = value
    for (section, key), why in NOT_ON_03.items():
        if section in doc and (key is None and doc[section] or key in doc[section]):
            _refuse(path, f"{section}.{key or next(iter(doc[section]))}", f"not supported on TorchTitan 0.3: {why}")

    job = doc.pop("job", {})
    for key, value in job.items():
        if key == "dump_folder" or ("job", key) in ACCEPTED_AS_IS:
            continue
        if key == "custom_config_module" and value == "motif_titan.job_config":
            continue  # 0.2.2's way of adding our sections; 0.3 reads them here
        _refuse(path, f"job.{key}", "unknown key; [job] takes dump_folder, description, custom_config_module = "
                                    "'motif_titan.job_config' under TorchTitan 0.3")
    experimental = doc.pop("experimental", {})
    for key, value in experimental.items():
        if not (key == "custom_import" and value == "motif_titan"):
            _refuse(path, f"experimental.{key}", "allowed: custom_import = 'motif_titan' (0.3 imports it itself)")

    model = doc.pop("model", {})
    name = model.get("name", MODEL_NAME)
    if name != MODEL_NAME:
        _refuse(path, "model.name", f"{name!r}; allowed: {MODEL_NAME!r} (other models: their own 0.3 config "
                                    "functions, with motif_titan's components)")
    for key in model:
        if key not in ("name", "flavor", "hf_assets_path", "gda_value_path", "converters"):
            _refuse(path, f"model.{key}", "unknown key; [model] takes name, flavor, hf_assets_path, gda_value_path, "
                                          "converters")
    flavor = model.get("flavor", "debugmodel")
    spec = model_registry(flavor, converters=_converters(path, model.get("converters", []), doc.pop("quantize", {}),
                                                          flavor))
    spec.model.gda_value_path = model.get("gda_value_path")
    hf_assets = model.get("hf_assets_path", "embedded")

    training_values = doc.pop("training", {})
    training_keys = set(training_values)
    loader_values = dict(training_values.pop("dataloader", {}) or {})
    curriculum = _build(path, "curriculum", doc.pop("curriculum", {}), CurriculumConfig)
    dataloader = CurriculumDataLoader.Config(curriculum=curriculum, hf_assets_path=hf_assets, document_positions=False)
    for key in TRAINING_TO_DATALOADER:
        if key in training_values:
            setattr(dataloader, key, training_values.pop(key))
    _fill(path, "training.dataloader", loader_values, dataloader,
          skip=("dataset", "dataset_path", "curriculum", "global_batch_size", "hf_assets_path", "document_positions"))
    training = TrainingConfig()
    _fill(path, "training", training_values, training, also=("dataloader", *TRAINING_TO_DATALOADER))
    dataloader.global_batch_size = training.global_batch_size

    config = MotifTrainer.Config(
        model_spec=spec,
        hf_assets_path=str(hf_assets_dir(hf_assets)),
        dump_folder=job.get("dump_folder", "./outputs"),
        training=training,
        dataloader=dataloader,
        optimizer=_optimizer(path, doc.pop("optimizer", {})),
        loss=CrossEntropyLoss.Config(),
        activation_checkpoint=_activation_checkpoint(path, doc.pop("activation_checkpoint", {})),
        parallelism=ParallelismConfig(spmd_backend=SPMD_BACKEND),
        metrics=ComponentMetrics.Config(),
        lr_scheduler=LRSchedulersContainer.Config(),
        # 0.3 warns at construction when initial_load_model_only (default True) has no path to apply to
        checkpoint=IntegrityCheckpointManager.Config(initial_load_model_only=False),
        compile=CompileConfig(),
        comm=CommConfig(),
        debug=DebugConfig(),
        profiler=Profiler.Config(),
    )
    config.guard = _build(path, "guard", doc.pop("guard", {}), GuardConfig)
    checkpoint = doc.get("checkpoint", {})
    for section, attribute in PLAIN_SECTIONS.items():
        _fill(path, section, doc.pop(section, {}), getattr(config, attribute))
    if config.checkpoint.initial_load_path and "initial_load_model_only" not in checkpoint:
        config.checkpoint.initial_load_model_only = True  # TorchTitan's default, under both versions
    if config.parallelism.pipeline_parallel_degree > 1 and "disable_cuda_graphs" not in training_keys:
        # 0.3 captures CUDA graphs by default and refuses that default under pipeline parallelism; a TOML of this
        # layout (written for 0.2.2, which has no CUDA graphs) means its pipeline, not the graphs
        config.training.disable_cuda_graphs = True
    for section in doc:
        _refuse(path, f"{section}.{next(iter(doc[section]), '')}",
                f"unknown section [{section}]; sections: job, experimental, model, training, optimizer, "
                f"lr_scheduler, parallelism, checkpoint, activation_checkpoint, compile, metrics, comm, debug, "
                f"profiling, curriculum, guard, quantize")
    MotifTrainer.Config.__post_init__(config)  # the trainer config's own checks, on the final values
    return config


def _flat(table: dict, prefix: str = "") -> dict[str, Any]:
    """``{"linear": {"float8": {"emulate": True}}}`` and ``{"linear.float8.emulate": True}`` alike as dotted keys."""
    flat = {}
    for key, value in table.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _converters(path: Path, names: list[str], quantize: dict, flavor: str) -> list:
    """``[model] converters`` and ``[quantize.linear.float8]`` as 0.3 config converters (FP8 linears only, checked
    by 0.2.2's rules)."""
    from motif_titan.infra.float8_rules import FLOAT8_AUTO_FILTER_CONVERTER, check_motif2_converters
    from motif_titan.model import motif2_args

    from .float8 import Motif2Float8

    settings = {}
    for key, value in _flat(quantize).items():
        name = key.removeprefix("linear.float8.")
        if name == key or name not in FLOAT8_KEYS:
            _refuse(path, f"quantize.{key}", f"unknown key; [quantize.linear.float8] takes {list(FLOAT8_KEYS)} "
                                             "under TorchTitan 0.3")
        settings[name] = [value] if name == "filter_fqns" and isinstance(value, str) else value
    names = [names] if isinstance(names, str) else list(names)
    tied = flavor in motif2_args and motif2_args[flavor].enable_weight_tying
    check_motif2_converters(names, list(settings.get("filter_fqns", [])), settings.get("recipe_name"), tied, flavor)
    if not names:
        return []
    return [Motif2Float8.Config(**settings, auto_filter=FLOAT8_AUTO_FILTER_CONVERTER in names)]


def _optimizer(path: Path, values: dict[str, Any]):
    name = values.get("name", "AdamW")
    if name in MUON_NAMES:
        config = MuonOptimizers.Config()
        _fill(path, "optimizer", values, config, skip=("implementation",))
        return config
    if name not in TORCHTITAN_NAMES:
        _refuse(path, "optimizer.name", f"{name!r}; allowed: {sorted(MUON_NAMES) + list(TORCHTITAN_NAMES)}")
    known = ("name", "lr", "eps", "weight_decay", "beta1", "beta2", "implementation")
    for key in values:
        if key not in known:
            _refuse(path, f"optimizer.{key}", f"unknown key with optimizer.name = {name!r}; allowed: {list(known)}")
    kwargs = {"lr": values.get("lr", 8e-4), "betas": (values.get("beta1", 0.9), values.get("beta2", 0.95)),
              "eps": values.get("eps", 1e-8), "weight_decay": values.get("weight_decay", 0.1)}
    return OptimizersContainer.Config(
        param_groups=[ParamGroupConfig(pattern=r".*", optimizer_name=name, optimizer_kwargs=kwargs)],
        implementation=values.get("implementation", "fused"))


def _activation_checkpoint(path: Path, values: dict[str, Any]):
    mode = values.get("mode", "selective")
    for key in values:
        if key != "mode":
            _refuse(path, f"activation_checkpoint.{key}", "unknown key under TorchTitan 0.3; allowed: mode")
    modes = {"none": None, "selective": SelectiveAC.Config(), "full": FullAC.Config()}
    if mode not in modes:
        _refuse(path, "activation_checkpoint.mode", f"{mode!r}; allowed: {list(modes)}")
    return modes[mode]
