"""Every TOML in train_configs/ parses with TorchTitan's ConfigManager, passes motif_titan's validation (its keys,
TorchTitan's fields, model flavor against the job, Muon, FP8 converter, curriculum and ramps at the GPU count it is
sized for) and builds its model on the meta device; the 12.7B stages chain, each starting from the previous stage's
final checkpoint; two launches of the debug config log the same losses."""

from pathlib import Path

from torchtitan.config import ConfigManager

from helpers.goldens import DEBUG_TOML_FIRST_STEPS




def test_two_launches_of_the_debug_config_log_the_same_losses(tmp_path):
    """The README's main job is reproducible run to run: the debug TOMLs set [debug] seed, and two launches of
    motif2_debug.toml (3 of its steps, nothing else overridden) log identical losses."""
    import re
    import subprocess
    import sys

    debug = Path(__file__).resolve().parents[2] / "train_configs" / "motif2_debug.toml"
    for path in (debug, debug.with_name("motif2_debug_curriculum.toml")):
        assert ConfigManager().parse_args(["--job.config_file", str(path)]).debug.seed is not None, path
    runs = []
    for run in ("first", "second"):
        cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file", str(debug), "--job.dump_folder",
               str(tmp_path / run), "--training.steps", "3", "--metrics.log_freq", "1",
               "--metrics.disable_color_printing"]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        log = proc.stdout + proc.stderr
        assert proc.returncode == 0, log[-4000:]
        runs.append(dict(re.findall(r"step:\s+(\d+)\s+loss:\s+([0-9.]+)", log)))
    assert sorted(runs[0]) == ["1", "2", "3"], runs
    assert runs[0] == runs[1], runs
    assert runs[0] == DEBUG_TOML_FIRST_STEPS  # and what TorchTitan 0.3 logs (tests/titan03)


