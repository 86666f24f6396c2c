"""The catalogue of bad training inputs (TOML fields, CLI values, data files): each ``Case`` says how to build the
input and which message must refuse it. Add a case by appending a ``Case`` to ``CASES``."""

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow
import pyarrow.parquet
import tomllib

REPO = Path(__file__).resolve().parents[2]
DEBUG_TOML = REPO / "train_configs" / "motif2_debug.toml"
CURRICULUM_TOML = REPO / "train_configs" / "motif2_debug_curriculum.toml"
BASES = {"debug": DEBUG_TOML, "curriculum": CURRICULUM_TOML}
JOB_TOML = "job.toml"  # the name each case's TOML is written under
SEQ_LEN_LINE = DEBUG_TOML.read_text().splitlines().index("seq_len = 256") + 1
TRAINING_LINE = DEBUG_TOML.read_text().splitlines().index("[training]") + 1


@dataclass(frozen=True)
class Case:
    id: str
    message: str
    """A fragment the refusal must contain, exactly."""
    toml: dict = field(default_factory=dict)
    """{section: {key: value}} set over the base TOML (a section "a.b" is the table b inside a)."""
    cli: tuple[str, ...] = ()
    base: str = "debug"
    """"debug" (train_configs/motif2_debug.toml) or "curriculum" (motif2_debug_curriculum.toml)."""
    edit: tuple[str, str] | None = None
    """(old, new) text replaced once in the base TOML file: typos, broken TOML."""
    world_size: int = 1
    data: Callable[[Path], dict] | None = None
    """Writes data files under the given folder and returns the ``[training]`` fields that use them (set in the
    TOML); the dataloader is built (data errors are raised where the data is read)."""
    launch: bool = False
    """Also launched for real (``python -m motif_titan.train``)."""


# -- data files ---------------------------------------------------------------------------------------------------

def _jsonl(tmp: Path, name: str, lines: list[str]) -> Path:
    path = tmp / name
    path.write_text("".join(line + "\n" for line in lines))
    return path


GOOD_LINES = [json.dumps({"text": f"document {i}: some words to train on."}) for i in range(4)]


def malformed_line_5(tmp: Path) -> dict:
    path = _jsonl(tmp, "bad.jsonl", [*GOOD_LINES, '{"text": "fine so far", oops}'])
    return {"dataset": "mytext", "dataset_path": str(path)}


def text_not_a_string(tmp: Path) -> dict:
    path = _jsonl(tmp, "bad.jsonl", [GOOD_LINES[0], '{"text": 123}'])
    return {"dataset": "mytext", "dataset_path": str(path)}


def bare_number_line(tmp: Path) -> dict:
    path = _jsonl(tmp, "bad.jsonl", [GOOD_LINES[0], GOOD_LINES[1], "42"])
    return {"dataset": "mytext", "dataset_path": str(path)}


def missing_text_field(tmp: Path) -> dict:
    path = _jsonl(tmp, "bad.jsonl", ['{"body": "no text field"}'])
    return {"dataset": "mytext", "dataset_path": str(path)}


def parquet_number_row(tmp: Path) -> dict:
    pyarrow.parquet.write_table(pyarrow.table({"text": [1, 2]}), tmp / "bad.parquet")
    return {"dataset": "mytext", "dataset_path": str(tmp / "bad.parquet")}


def parquet_without_text_column(tmp: Path) -> dict:
    pyarrow.parquet.write_table(pyarrow.table({"body": ["a", "b"]}), tmp / "bad.parquet")
    return {"dataset": "mytext", "dataset_path": str(tmp / "bad.parquet")}


def txt_not_utf8(tmp: Path) -> dict:
    (tmp / "bad.txt").write_bytes(b"caf\xe9 au lait\n")
    return {"dataset": "mytext", "dataset_path": str(tmp / "bad.txt")}


def jsonl_not_utf8(tmp: Path) -> dict:
    (tmp / "bad.jsonl").write_bytes((GOOD_LINES[0] + "\n").encode() + b'{"text": "caf\xe9"}\n')
    return {"dataset": "mytext", "dataset_path": str(tmp / "bad.jsonl")}


def missing_dataset_path(tmp: Path) -> dict:
    return {"dataset": "mytext", "dataset_path": str(tmp / "nowhere")}


def no_text_files(tmp: Path) -> dict:
    (tmp / "notes.md").write_text("not a corpus file")
    return {"dataset": "mytext", "dataset_path": str(tmp)}


def foreign_token_shard(tmp: Path) -> dict:
    (tmp / "shard").mkdir()
    (tmp / "shard" / "token_shard.json").write_text(json.dumps({"format": "someone_else.v3"}))
    return {"dataset": "shards", "dataset_path": str(tmp / "shard")}


def curriculum_source_malformed(tmp: Path) -> dict:
    _jsonl(tmp, "bad.jsonl", [*GOOD_LINES, '{"text": "fine so far", oops}'])
    return {}


CASES: list[Case] = [
    # [training]: TorchTitan's fields motif_titan depends on
    Case("seq_len_zero", "training.seq_len = 0; allowed: >= 1", toml={"training": {"seq_len": 0}}),
    Case("seq_len_str", "training.seq_len = '256' (str); allowed: an integer, >= 1",
         toml={"training": {"seq_len": "256"}}),
    Case("seq_len_cli_zero", "training.seq_len = 0; allowed: >= 1", cli=("--training.seq_len", "0")),
    Case("seq_len_above_flavor", "training.seq_len = 4096 exceeds the max_seq_len 2048",
         toml={"training": {"seq_len": 4096}}),
    Case("local_batch_zero", "training.local_batch_size = 0; allowed: >= 1", toml={"training": {"local_batch_size": 0}}),
    Case("local_batch_float", "training.local_batch_size = 2.5 (float); allowed: an integer, >= 1",
         toml={"training": {"local_batch_size": 2.5}}),
    Case("global_batch_zero", "training.global_batch_size = 0; allowed: -1 (training.local_batch_size x the "
         "data-parallel degree) or >= 1", toml={"training": {"global_batch_size": 0}}),
    Case("global_batch_not_multiple", "training.global_batch_size = 12; allowed: -1 or a multiple of "
         "training.local_batch_size (8) x the data-parallel degree (1) = 8", toml={"training": {"global_batch_size": 12}}),
    Case("global_batch_not_multiple_two_ranks", "training.global_batch_size = 24; allowed: -1 or a multiple of "
         "training.local_batch_size (8) x the data-parallel degree (2) = 16",
         toml={"training": {"global_batch_size": 24}}, world_size=2),
    Case("steps_zero", "training.steps = 0; allowed: >= 1", toml={"training": {"steps": 0}}),
    Case("steps_bool", "training.steps = True (bool); allowed: an integer, >= 1", toml={"training": {"steps": True}}),
    Case("max_norm_negative", "training.max_norm = -1.0; allowed: > 0", toml={"training": {"max_norm": -1.0}}),
    Case("num_workers_negative", "training.dataloader.num_workers = -1; allowed: >= 0",
         toml={"training": {"dataloader": {"num_workers": -1}}}),
    # [optimizer]: TorchTitan's fields
    Case("lr_str", "optimizer.lr = 'fast' (str); allowed: a number, >= 0", toml={"optimizer": {"lr": "fast"}}),
    Case("lr_negative", "optimizer.lr = -0.1; allowed: >= 0", toml={"optimizer": {"lr": -0.1}}),
    Case("lr_cli_str", "Error parsing --optimizer.lr: could not convert string to float: 'fast'",
         cli=("--optimizer.lr", "fast")),
    Case("weight_decay_negative", "optimizer.weight_decay = -1; allowed: >= 0", toml={"optimizer": {"weight_decay": -1}}),
    Case("beta2_one", "optimizer.beta2 = 1.0; allowed: 0 <= beta2 < 1", toml={"optimizer": {"beta2": 1.0}}),
    Case("optimizer_name", "optimizer.name = 'Lion'; allowed: ['DistributedMuon', 'Muon', 'ParallelMuon', 'AdamW', "
         "'Adam']", toml={"optimizer": {"name": "Lion"}}),
    # [optimizer]: motif_titan's Muon fields
    Case("ns_steps_float", "optimizer.ns_steps = 2.5 (float); allowed: an integer, >= 1",
         toml={"optimizer": {"name": "ParallelMuon", "ns_steps": 2.5}}),
    Case("ns_steps_cli_float", "Error parsing --optimizer.ns-steps", cli=("--optimizer.ns_steps", "2.5")),
    Case("ns_steps_zero", "optimizer.ns_steps = 0; allowed: >= 1", toml={"optimizer": {"name": "Muon", "ns_steps": 0}}),
    Case("momentum_one", "optimizer.momentum = 1.0; allowed: 0 <= momentum < 1",
         toml={"optimizer": {"name": "Muon", "momentum": 1.0}}),
    Case("nesterov_str", "optimizer.nesterov = 'yes'; allowed: true or false", toml={"optimizer": {"nesterov": "yes"}}),
    Case("ns_coefficients", "optimizer.ns_coefficients = 'kimi'; allowed: ['keller', 'motif', 'polar_express']",
         toml={"optimizer": {"name": "ParallelMuon", "ns_coefficients": "kimi"}}),
    Case("adjust_lr", "optimizer.adjust_lr = 'fast'; allowed: ['match_rms_adamw', 'original']",
         toml={"optimizer": {"adjust_lr": "fast"}}),
    Case("chunk_size_zero", "optimizer.chunk_size = 0; allowed: >= 1", toml={"optimizer": {"chunk_size": 0}}),
    Case("assignment", "optimizer.assignment = 'random'; allowed: ['flops_round_robin', 'lpt', 'round_robin']",
         toml={"optimizer": {"assignment": "random"}}),
    Case("adamw_patterns_str", "optimizer.adamw_param_patterns = 'output'; allowed: a list of strings",
         toml={"optimizer": {"adamw_param_patterns": "output"}}),
    Case("adamw_lr_ratio_zero", "optimizer.adamw_lr_ratio = 0; allowed: > 0", toml={"optimizer": {"adamw_lr_ratio": 0}}),
    Case("qk_clip_with_adamw", "optimizer.qk_clip_threshold = 100 with optimizer.name = 'AdamW': MuonClip runs inside "
         "motif_titan's Muon optimizers and AdamW would ignore it; allowed: set optimizer.name to one of "
         "['DistributedMuon', 'Muon', 'ParallelMuon'], or optimizer.qk_clip_threshold = 0 (off)",
         toml={"optimizer": {"qk_clip_threshold": 100}}),
    Case("qk_clip_with_adamw_cli", "optimizer.qk_clip_threshold = 50.0 with optimizer.name = 'AdamW'",
         cli=("--optimizer.qk_clip_threshold", "50")),
    Case("qk_clip_negative", "optimizer.qk_clip_threshold = -1; allowed: 0 (off) or > 0",
         toml={"optimizer": {"name": "ParallelMuon", "qk_clip_threshold": -1}}),
    Case("qk_clip_alpha", "optimizer.qk_clip_alpha = 2; allowed: 0 <= qk_clip_alpha <= 1",
         toml={"optimizer": {"name": "ParallelMuon", "qk_clip_alpha": 2}}),
    # [lr_scheduler], [metrics], [debug]
    Case("warmup_negative", "lr_scheduler.warmup_steps = -1; allowed: >= 0", toml={"lr_scheduler": {"warmup_steps": -1}}),
    Case("warmup_float", "lr_scheduler.warmup_steps = 2.5 (float); allowed: an integer, >= 0",
         toml={"lr_scheduler": {"warmup_steps": 2.5}}),
    Case("decay_type", "lr_scheduler.decay_type = 'exp'; allowed: ['linear', 'sqrt', 'cosine']",
         toml={"lr_scheduler": {"decay_type": "exp"}}),
    Case("decay_ratio", "lr_scheduler.decay_ratio = 1.5; allowed: 0 <= decay_ratio <= 1, or unset",
         toml={"lr_scheduler": {"decay_ratio": 1.5}}),
    Case("min_lr_factor", "lr_scheduler.min_lr_factor = 2; allowed: 0 <= min_lr_factor <= 1",
         toml={"lr_scheduler": {"min_lr_factor": 2}}),
    Case("log_freq_zero", "metrics.log_freq = 0; allowed: >= 1", toml={"metrics": {"log_freq": 0}}),
    Case("seed_str", "debug.seed = 'abc' (str); allowed: an integer, >= 0, or unset", toml={"debug": {"seed": "abc"}}),
    # [model]
    Case("flavor", "model.flavor = '13B' is not a motif2 flavor; allowed: ['12.7B'", toml={"model": {"flavor": "13B"}}),
    Case("gda_value_path", "model.gda_value_path = 'fused'; allowed: ['auto', 'split', 'joint', 'joint_noise'], or "
         "unset (the flavor's own)", toml={"model": {"gda_value_path": "fused"}}),
    Case("gda_value_path_int", "model.gda_value_path = 5; allowed: ['auto', 'split', 'joint', 'joint_noise']",
         toml={"model": {"gda_value_path": 5}}),
    # [parallelism]: degrees against the world size
    Case("tp_without_ranks", "parallelism.data_parallel_replicate_degree = 1 x parallelism.data_parallel_shard_degree "
         "= -1 x parallelism.context_parallel_degree = 1 x parallelism.tensor_parallel_degree = 2 x "
         "parallelism.pipeline_parallel_degree = 1: the degrees other than data_parallel_shard_degree multiply to 2, "
         "which does not divide the world size 1", cli=("--parallelism.tensor_parallel_degree", "2"), launch=True),
    Case("product_not_world", "the degrees multiply to 3, but the world size (processes launched) is 4; allowed: "
         "degrees whose product is 4", toml={"parallelism": {"data_parallel_shard_degree": 3}}, world_size=4),
    Case("product_above_world", "the degrees multiply to 4, but the world size (processes launched) is 2",
         toml={"parallelism": {"data_parallel_shard_degree": 2, "pipeline_parallel_degree": 2}}, world_size=2),
    Case("tp_zero", "parallelism.tensor_parallel_degree = 0; allowed: >= 1",
         toml={"parallelism": {"tensor_parallel_degree": 0}}),
    Case("dp_shard_zero", "parallelism.data_parallel_shard_degree = 0; allowed: -1 (the ranks left over) or an "
         "integer >= 1", toml={"parallelism": {"data_parallel_shard_degree": 0}}),
    Case("cp_float", "parallelism.context_parallel_degree = 2.0 (float); allowed: an integer, >= 1",
         toml={"parallelism": {"context_parallel_degree": 2.0}}),
    Case("tp_splits_a_group", "parallelism.tensor_parallel_degree = 4: tensor parallelism keeps whole GDA groups",
         toml={"parallelism": {"tensor_parallel_degree": 4}}, world_size=4),
    # [curriculum]
    Case("curriculum_mode", "curriculum.mode = 'dpo'; allowed: ['pretrain', 'sft']", base="curriculum",
         toml={"curriculum": {"mode": "dpo"}}),
    Case("curriculum_seed_float", "curriculum.seed = 1.5; allowed: an integer >= 0", base="curriculum",
         toml={"curriculum": {"seed": 1.5}}),
    Case("batch_ramp_start_str", "curriculum.batch_ramp_start_tokens = '2048'; allowed: an integer: 0 (off) or > 0",
         base="curriculum", toml={"curriculum": {"batch_ramp_start_tokens": "2048"}}),
    Case("batch_ramp_steps_float", "curriculum.batch_ramp_steps = [1, 40.5]; allowed: [first, last] steps "
         "(integers) with 1 <= first < last, or [] (no ramp)", base="curriculum",
         toml={"curriculum": {"batch_ramp_steps": [1, 40.5]}}),
    Case("seq_len_ramp_start", "curriculum.seq_len_ramp_start = 100; allowed: 0 (off) or training.seq_len (256) / 2^k",
         base="curriculum", toml={"curriculum": {"seq_len_ramp_start": 100}}),
    Case("curriculum_without_domains", "curriculum.mode = 'sft'; allowed: the default 'pretrain' without "
         "[[curriculum.domains]] tables", toml={"curriculum": {"mode": "sft"}}),
    Case("domain_key_typo", "curriculum.domains[0].sorces = ['embedded:prose']; allowed: keys name, sources",
         base="curriculum", edit=('name = "prose"\nsources = ', 'name = "prose"\nsorces = ')),
    Case("domain_streaming_not_bool", "curriculum.domains[0].streaming = 'yes'; allowed: true or false",
         base="curriculum", edit=('name = "prose"\n', 'name = "prose"\nstreaming = "yes"\n')),
    Case("domain_streaming_local_file", "curriculum.domains[0].sources[0] = 'embedded:prose'; allowed: 'hf:PATH' "
         "sources only", base="curriculum", edit=('name = "prose"\n', 'name = "prose"\nstreaming = true\n')),
    Case("phase_weight_negative", "curriculum.phases[0].start_weights.math = -0.1; allowed: a number >= 0",
         base="curriculum", edit=("math = 0.1, code = 0.1 }", "math = -0.1, code = 0.1 }")),
    Case("curriculum_source_malformed", "bad.jsonl, line 5: not valid JSON (Expecting property name enclosed in double quotes at column 25)",
         base="curriculum", edit=('sources = ["embedded:math"]', 'sources = ["bad.jsonl"]'),
         data=curriculum_source_malformed),
    # the TOML file itself
    Case("key_typo", f"{JOB_TOML}, line {SEQ_LEN_LINE}: unknown key 'training.seq_lne'; did you mean "
         "'training.seq_len'?", edit=("seq_len = 256", "seq_lne = 256"), launch=True),
    Case("section_typo", f"{JOB_TOML}, line {TRAINING_LINE}: unknown section 'trainig'; did you mean 'training'?",
         edit=("[training]", "[trainig]")),
    Case("key_in_wrong_section", "unknown key 'training.lr'; did you mean 'optimizer.lr'?",
         edit=("seq_len = 256", "seq_len = 256\nlr = 0.001")),
    Case("muon_key_typo", "unknown key 'optimizer.qk_clip_treshold'; did you mean 'optimizer.qk_clip_threshold'?",
         edit=("lr = 2e-3", "lr = 2e-3\nqk_clip_treshold = 100.0")),
    Case("not_toml", f"{JOB_TOML}: not valid TOML: ", edit=("seq_len = 256", "seq_len = = 256")),
    # data files
    Case("jsonl_malformed_line", "bad.jsonl, line 5: not valid JSON (Expecting property name enclosed in double quotes at column 25)",
         data=malformed_line_5, launch=True),
    Case("jsonl_text_int", "bad.jsonl, line 2: field 'text' must be a string, got int 123", data=text_not_a_string),
    Case("jsonl_bare_number", "bad.jsonl, line 3: a JSON object is needed, got int 42", data=bare_number_line),
    Case("jsonl_no_text_field", "bad.jsonl, line 1: no 'text' field (keys: ['body'])", data=missing_text_field),
    Case("jsonl_not_utf8", "bad.jsonl, line 2: not UTF-8 text (invalid continuation byte at column 14)",
         data=jsonl_not_utf8),
    Case("parquet_number", "bad.parquet, row 1: field 'text' must be a string, got int 1", data=parquet_number_row),
    Case("parquet_no_column", "bad.parquet: no 'text' column (columns: ['body'])", data=parquet_without_text_column),
    Case("txt_not_utf8", "bad.txt: not UTF-8 text (invalid continuation byte at byte 3)", data=txt_not_utf8),
    Case("dataset_without_path", "training.dataset = 'mytext' is not a dataset this project's text dataloader knows, "
         "and training.dataset_path is not set (a custom name needs it); allowed: training.dataset = 'embedded' (the "
         "packaged corpus), one of TorchTitan's datasets ['c4', 'c4_test', 'c4_validation'], or any other name with "
         "training.dataset_path set to a .jsonl/.txt/.parquet file, a directory of them, or a token shard directory",
         cli=("--training.dataset", "mytext")),
    Case("dataset_path_missing", "nowhere' does not exist", data=missing_dataset_path),
    Case("dataset_path_no_text_files", "holds no .jsonl, .txt, .parquet files and is not a token shard directory",
         data=no_text_files),
    Case("foreign_token_shard", "not a motif_titan.token_shard.v1 token shard (format 'someone_else.v3')",
         data=foreign_token_shard),
]


# -- running a case -------------------------------------------------------------------------------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def write_case_toml(case: Case, folder: Path, training: dict | None = None) -> Path:
    """The case's TOML: the base file with ``edit`` applied, re-written with ``toml`` (and the data case's
    ``[training]`` fields) set over it."""
    text = BASES[case.base].read_text()
    if case.edit is not None:
        assert text.count(case.edit[0]) == 1, case.edit
        text = text.replace(*case.edit)
    sections = {**case.toml, "training": {**case.toml.get("training", {}), **(training or {})}}
    if any(sections.values()):
        config = tomllib.loads(text)
        for section, values in sections.items():
            table = config.setdefault(section, {})
            for key, value in values.items():
                if isinstance(value, dict) and isinstance(table.get(key), dict):
                    table[key].update(value)
                else:
                    table[key] = value
        lines = []
        for section, values in config.items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {_toml_value(value)}" for key, value in values.items()]
        text = "\n".join(lines) + "\n"
    path = folder / JOB_TOML
    path.write_text(text)
    return path


def case_args(case: Case, folder: Path) -> list[str]:
    training = case.data(folder) if case.data is not None else None
    return ["--job.config_file", str(write_case_toml(case, folder, training)), *case.cli]
