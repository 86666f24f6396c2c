"""The SkyPilot task for the 12.7B stages: a schema check of what the launch depends on (always), and SkyPilot's own
task loader where SkyPilot is installed (it is not a test dependency: it pins an older click than
huggingface-hub needs)."""

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "train_configs" / "skypilot" / "motif2_12.7B.yaml"
STAGES = ["pretrain", "anneal", "sft1", "sft2", "sft3"]


def test_task_schema_runs_torchrun_over_all_nodes_with_checkpoints_on_the_mount():
    task = yaml.safe_load(TASK.read_text())
    assert set(task) <= {"name", "num_nodes", "resources", "envs", "file_mounts", "workdir", "setup", "run"}
    assert isinstance(task["num_nodes"], int) and task["num_nodes"] >= 1
    assert re.fullmatch(r"H100:8", task["resources"]["accelerators"])
    assert task["resources"]["job_recovery"]["strategy"] == "FAILOVER"  # managed-job recovery
    assert task["file_mounts"]["/checkpoints"]["mode"] == "MOUNT"
    assert task["envs"]["STAGE"] in STAGES
    assert "pip install -e ." in task["setup"]
    run = " ".join(task["run"].split())
    for flag in ('--nnodes "$SKYPILOT_NUM_NODES"', '--nproc_per_node "$SKYPILOT_NUM_GPUS_PER_NODE"',
                 '--node_rank "$SKYPILOT_NODE_RANK"', '--master_addr "$MASTER_ADDR"', "-m motif_titan.train",
                 '--job.config_file "train_configs/motif2_12.7B_${STAGE}.toml"',
                 '--job.dump_folder "/checkpoints/motif2_12.7B_${STAGE}"'):
        assert flag in run, flag
    assert 'MASTER_ADDR=$(echo "$SKYPILOT_NODE_IPS" | head -n1)' in task["run"]
    for stage in STAGES:
        assert (ROOT / "train_configs" / f"motif2_12.7B_{stage}.toml").is_file(), stage


@pytest.mark.parametrize("stage", STAGES)
def test_skypilot_loads_the_task(stage):
    sky = pytest.importorskip("sky")
    task = sky.Task.from_yaml_config(yaml.safe_load(TASK.read_text()), env_overrides=[("STAGE", stage)])
    assert task.num_nodes == 50 and task.envs["STAGE"] == stage
    assert {name: storage.name for name, storage in task.storage_mounts.items()} == {
        "/checkpoints": "motif2-checkpoints", "/data": "motif2-data"}
    (resources,) = task.resources
    assert resources.accelerators == {"H100": 8}
