"""The README holds exactly two commands (main job, tests), .ci/run runs the README's test command, the README is a
short front door whose links into docs/ resolve, and every test file the README or docs/ cite exists."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks]


def test_readme_has_exactly_two_commands():
    main_job, tests = readme_commands()
    assert main_job.endswith("python -m motif_titan.train --job.config_file train_configs/motif2_debug.toml")
    assert tests.endswith("python -m pytest -q && bash scripts/test_titan03.sh")
    assert "\n" not in main_job and "\n" not in tests


def test_ci_runs_the_readme_test_command():
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    assert ci_lines[-1] == readme_commands()[1]


def test_readme_main_job_config_exists():
    assert (REPO / "train_configs" / "motif2_debug.toml").is_file()


def test_every_test_the_readme_and_docs_cite_exists():
    """docs/testing.md's "What the tests prove" table names the test file of every composition claim."""
    cited = {}
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for path in re.findall(r"`(tests/[\w/]+\.py)`", page.read_text()):
            cited.setdefault(path, page.relative_to(REPO).as_posix())
    assert "tests/integration/test_composition_matrix.py" in cited
    missing = sorted(f"{path} (cited in {page})" for path, page in cited.items() if not (REPO / path).is_file())
    assert not missing, missing


def test_readme_is_a_short_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 120, len(lines)


def test_every_relative_link_resolves():
    """Links from the README into docs/ and back, and between docs pages (anchors: to a heading of the page)."""
    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if "://" in target:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target}")
            elif anchor:
                headings = re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)
                slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
                if anchor not in slugs:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken
