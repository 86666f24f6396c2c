"""The upscaler keeps the source model's function: tiny random Motif-2 models go through the CLI (HF safetensors
in; DCP and HF out; DCP in for a second round) and the upscaled model, built from the written files, must give
the source's logits. Plus the 2.6B -> 12.7B plan, the pieces of each step, and bad input."""




# A Motif-2.6B look-alike, tiny: plain differential attention (1 signal head per group), tied embeddings,
# 8 layers so that +25% depth (8 -> 10) moves layers 4..7 to new indices.


def test_module_entry_point_help_explains_each_step():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "motif_titan.upscale", "--help"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for step in ("1. width (--width-factor m): hypercloning", "2. heads (--signal-heads-per-group R)",
                 "3. depth (--num-layers L'): LLaMA-Pro", "--dry-run", "--overwrite", "--noise-snr-db"):
        assert step in proc.stdout, step


