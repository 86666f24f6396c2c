"""pyproject.toml lists every package directory, so a built wheel (what a user installs) has all of motif_titan."""

from pathlib import Path

import tomli

REPO = Path(__file__).resolve().parents[2]


def test_every_package_directory_is_listed_in_pyproject():
    config = tomli.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "motif_titan").rglob("__init__.py")}
    found |= {"motif_titan.kernels", "motif_titan.train_configs"}
    assert found == listed
    assert "motif_titan.upscale" in listed  # the upscaler CLI ships in the wheel
    assert config["package-dir"]["motif_titan.kernels"] == "kernels"
    assert (REPO / "kernels" / "__init__.py").is_file()
    assert config["package-dir"]["motif_titan.train_configs"] == "train_configs"  # the 0.3 config functions read them
    assert config["package-data"]["motif_titan.train_configs"] == ["*.toml"]
    assert not (REPO / "motif_titan" / "kernels").exists()  # kernels/ is the one source of motif_titan.kernels
