"""Every TOML in train_configs/ parses with TorchTitan's ConfigManager, passes motif_titan's validation (its keys,
TorchTitan's fields, model flavor against the job, Muon, FP8 converter, curriculum and ramps at the GPU count it is
sized for) and builds its model on the meta device; the 12.7B stages chain, each starting from the previous stage's
final checkpoint; a launch of the debug config logs the losses pinned from earlier launches."""

from pathlib import Path

from torchtitan.config import ConfigManager

from helpers.goldens import DEBUG_TOML_FIRST_STEPS
from helpers.launch import STEP_LOSS




def test_a_launch_of_the_debug_config_logs_the_pinned_losses(tmp_path):
    """The README's main job is reproducible run to run: the debug TOMLs set [debug] seed, and a launch of
    motif2_debug.toml (3 of its steps, nothing else overridden) logs the losses pinned from earlier launches
    (helpers.goldens, which TorchTitan 0.3 must log too)."""
    import subprocess
    import sys

    debug = Path(__file__).resolve().parents[2] / "train_configs" / "motif2_debug.toml"
    for path in (debug, debug.with_name("motif2_debug_curriculum.toml")):
        assert ConfigManager().parse_args(["--job.config_file", str(path)]).debug.seed is not None, path
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(debug), "--job.dump_folder",
           str(tmp_path / "run"), "--training.steps", "3", "--metrics.log_freq", "1", "--metrics.disable_color_printing"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert dict(STEP_LOSS.findall(log)) == DEBUG_TOML_FIRST_STEPS
