"""Catalogue of bad inputs: each is refused before any work, by a message that names the field (``section.field =
value`` and what is allowed) or the file (and its 1-based line).

Every case runs in process through what ``python -m motif_titan.train`` runs before training: the launcher's TOML
key check (``motif_titan.validate.check_config_file``), TorchTitan's ConfigManager (tyro refuses a wrong CLI type
itself), ``motif_titan.validate.validate_job_config`` (what ``CurriculumTrainer.__init__`` calls before TorchTitan
builds anything) and, for data cases, the dataloader builder (which runs before the model is built). A few cases
(``launch=True``) are also launched for real: exit code != 0, the message, no step logged, no checkpoint written.

Add a case by appending a ``Case`` to ``CASES`` (tests/helpers/bad_train_inputs.py).

The other commands' bad input (upscale's damaged sources, pretokenize's arguments: ``BAD_INPUT_CASES`` of
tests/helpers/bad_cli_inputs.py) runs through their ``main(argv)``: exit code 2, one message naming the argument or
file, no traceback, nothing written. Damaged checkpoints (``DAMAGED_CHECKPOINTS``) are named by the manifest check
that runs before a step is loaded (tests/integration/test_checkpoint_integrity.py launches the trainer on them: it names the
step and file, falls back to the newest intact step, or stops when none is intact).
"""

import contextlib
import io
import warnings
from functools import lru_cache
from pathlib import Path

import pytest

from helpers.bad_train_inputs import CASES, Case, case_args
from helpers.bad_cli_inputs import BAD_INPUT_CASES, EX, PRE, UP, prepare_bad_inputs


def parse_job_config(args: list[str]):
    """TorchTitan's ConfigManager.parse_args. Without CLI overrides, tyro (about 1 s per parse here) returns the
    TOML's values unchanged (it only warns about wrong types), so the TOML is read into the merged config
    dataclasses the way parse_args reads it before handing it to tyro."""
    from torchtitan.config import ConfigManager

    manager = ConfigManager()
    if len(args) > 2:
        return manager.parse_args(args)
    toml = manager._maybe_load_toml(args)
    return manager._dict_to_dataclass(manager._maybe_add_custom_config(args, toml), toml)


@lru_cache(maxsize=1)
def _tokenizer():
    from torchtitan.config import ConfigManager

    from motif_titan.data.text_dataloader import build_tokenizer

    return build_tokenizer(ConfigManager().parse_args(["--model.hf_assets_path", "embedded"]))


def refusal_in_process(case: Case, folder: Path) -> str:
    """What ``python -m motif_titan.train`` checks before training, in this process; the refusal's message."""
    import motif_titan  # noqa: F401
    from motif_titan.data.curriculum_dataloader import build_curriculum_dataloader
    from motif_titan.validate import check_config_file, data_parallel_degree, validate_job_config

    args = case_args(case, folder)
    output = io.StringIO()
    try:
        check_config_file(args)
        with contextlib.redirect_stderr(output), contextlib.redirect_stdout(output), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tyro warns about TOML values of the wrong type, and keeps them
            job_config = parse_job_config(args)
        validate_job_config(job_config, case.world_size)
        if case.data is not None or case.cli[:1] == ("--training.dataset",):
            dp = data_parallel_degree(job_config, case.world_size)
            build_curriculum_dataloader(dp, 0, _tokenizer(), job_config)
    except SystemExit as error:  # tyro: a CLI value of the wrong type (exit code 2)
        assert error.code != 0
        return output.getvalue()
    except (ValueError, FileNotFoundError, NotImplementedError) as error:
        return str(error)
    pytest.fail(f"{case.id}: accepted")


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_naming_the_field_or_file(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative data paths of a case resolve in its folder
    message = refusal_in_process(case, tmp_path)
    assert case.message in message, message


def test_catalogue_is_large_and_ids_are_unique():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES)




# -- the other commands: upscale and pretokenize ----------------------------------------------------------------

from motif_titan.data import pretokenize as pretokenize_cli  # noqa: E402
from motif_titan.export import __main__ as export_cli  # noqa: E402
from motif_titan.upscale import __main__ as upscale_cli  # noqa: E402


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_inputs")
    prepare_bad_inputs(tmp)
    return tmp


def _listing(tmp: Path) -> list[str]:
    return sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*"))


@pytest.mark.parametrize("description,argv,fragment", BAD_INPUT_CASES, ids=[c[0] for c in BAD_INPUT_CASES])
def test_bad_input_is_named_and_writes_nothing(bad_inputs, capsys, description, argv, fragment):
    argv = [a.replace("{tmp}", str(bad_inputs)) for a in argv]
    main = {UP: upscale_cli.main, PRE: pretokenize_cli.main, EX: export_cli.main}[argv[0]]
    before = _listing(bad_inputs)
    capsys.readouterr()
    try:
        code = main(argv[1:])
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2
    assert fragment.replace("{tmp}", str(bad_inputs)) in err
    assert "Traceback" not in err
    assert _listing(bad_inputs) == before


# -- damaged checkpoints ------------------------------------------------------------------------------------------

def _flip(path: Path, offset: int = 64, count: int = 256) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = bytes(b ^ 0xFF for b in data[offset:offset + count])
    path.write_bytes(bytes(data))


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# (id, damage done to a saved step folder, what the check must say)
DAMAGED_CHECKPOINTS = [
    ("distcp_flipped", lambda d: _flip(d / "__0_0.distcp"), "__0_0.distcp: checksum differs (crc32 of bytes 0.."),
    ("distcp_truncated", lambda d: _cut(d / "__0_0.distcp", 1000),
     "__0_0.distcp has 1000 bytes, the manifest records"),
    ("distcp_grown", lambda d: (d / "__0_0.distcp").write_bytes((d / "__0_0.distcp").read_bytes() + b"x"),
     "(size differs)"),
    ("distcp_missing", lambda d: (d / "__0_0.distcp").unlink(), "__0_0.distcp is missing"),
    ("metadata_truncated", lambda d: _cut(d / ".metadata", 10), ".metadata has 10 bytes, the manifest records"),
    ("metadata_flipped", lambda d: _flip(d / ".metadata", 0, 8), ".metadata: checksum differs"),
    ("manifest_truncated", lambda d: _cut(d / "motif_manifest.json", 20), "motif_manifest.json is unreadable"),
]


@pytest.fixture(scope="module")
def saved_step(tmp_path_factory) -> Path:
    """A small DCP step folder with its manifest, as the trainer's checkpointer leaves one."""
    import torch
    import torch.distributed.checkpoint as dcp

    from motif_titan.infra.checkpoint_integrity import write_manifest

    step = tmp_path_factory.mktemp("ckpt") / "step-7"
    state = {"model": {"w": torch.arange(4096, dtype=torch.float32).reshape(64, 64), "b": torch.ones(64)}}
    dcp.save(state, checkpoint_id=str(step), no_dist=True)
    write_manifest(str(step))
    return step


@pytest.mark.parametrize("case", DAMAGED_CHECKPOINTS, ids=[c[0] for c in DAMAGED_CHECKPOINTS])
def test_damaged_checkpoint_is_named_before_it_is_loaded(saved_step, tmp_path, case):
    import shutil

    from motif_titan.infra.checkpoint_integrity import verify_step

    _, damage, message = case
    step = tmp_path / saved_step.name
    shutil.copytree(saved_step, step)
    assert verify_step(str(step)) == []
    damage(step)
    problems = verify_step(str(step))
    assert len(problems) == 1 and message in problems[0], problems


def test_whole_catalogue_is_large():
    assert len(CASES) + len(BAD_INPUT_CASES) + len(DAMAGED_CHECKPOINTS) >= 40
