from pathlib import Path




def test_training_runs_from_a_token_shard_folder(tokenizer, tmp_path):
    """A real launch of the debug config with ``training.dataset_path`` = a pretokenize output folder built here
    from the embedded prose: 3 steps are trained and logged."""
    import re
    import subprocess
    import sys

    from motif_titan.data.pretokenize import pretokenize

    shard = pretokenize(["embedded:prose"], tmp_path / "prose_tokens", tokenizer, progress=False)
    cmd = [sys.executable, "-m", "motif_titan.train", "--job.config_file",
           str(Path(__file__).resolve().parents[2] / "train_configs" / "motif2_debug.toml"),
           "--job.dump_folder", str(tmp_path / "run"), "--training.dataset", "prose_tokens",
           "--training.dataset_path", str(shard), "--training.steps", "3", "--training.seq_len", "128",
           "--metrics.log_freq", "1", "--metrics.disable_color_printing"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Local text dataset: " in log and " documents from 1 files" in log, log[-4000:]
    losses = dict(re.findall(r"step:\s+(\d+)\s+loss:\s+([0-9.]+)", log))
    assert sorted(losses) == ["1", "2", "3"], log[-4000:]


