"""What every GPU benchmark records about where it ran (imported by the benchmark scripts in this folder)."""

import subprocess


def driver_version() -> str | None:
    """The NVIDIA driver version nvidia-smi reports, or None where nvidia-smi is missing."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
