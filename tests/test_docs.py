"""The documentation site builds strictly, and its reference is generated from the code's own declarations.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the navigation, a
reference marker no generator knows, or a docstring mkdocstrings cannot parse; so a change that
breaks the site fails the suite. The documented commands themselves are run by tests/test_readme.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reservoir_dqn.commands.cli import COMMANDS
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.config import Config, flatten, load_config
from tests.conftest import REPO
from tools import docs_reference

slow = (
    pytest.mark.slow
)  # builds the whole site (seconds per worker); the reference pages' generated parts are checked fast


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built as `make docs-build` builds it, in strict mode."""
    folder = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about MkDocs 2.0, printed on every build
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(folder)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return folder


def _page(name: str) -> str:
    """A reference page's markdown with its generated parts expanded, as the site's hook expands them."""
    return docs_reference.expand((REPO / "docs/reference" / f"{name}.md").read_text())


@slow
def test_the_site_builds_strictly_with_every_page_in_the_navigation(site: Path) -> None:
    pages = sorted(path.relative_to(REPO / "docs").with_suffix("") for path in (REPO / "docs").rglob("*.md"))
    for page in pages:
        built = site / ("index.html" if page.name == "index" else f"{page}/index.html")
        assert built.is_file(), f"docs/{page}.md was not built"
    assert len(pages) >= 25
    parameters = (site / "reference/parameters/index.html").read_text()
    assert "tracking.champion_budget.&lt;key&gt;.total_frames" in parameters  # the generated table reached the page


def test_every_parameter_is_in_the_reference() -> None:
    text = _page("parameters")
    for key in flatten(load_config(REPO / "params.yaml").model_dump(mode="json")):
        if not key.startswith(("tracking.champion_budget.", "tune.space.")):  # one row each for their keys' fields
            assert f"`{key}`" in text, f"{key} is missing from the parameters' reference"
    assert "`tracking.champion_budget.<key>.total_frames`" in text
    assert "strictly ascending" in text  # the reservoir's rules
    headings = {line.lstrip("#").strip().strip("`") for line in text.splitlines() if line.startswith("#")}
    assert set(Config.model_fields) <= headings  # a heading each


def test_every_command_and_exit_status_is_in_the_reference() -> None:
    commands = _page("commands")
    for name in COMMANDS:
        assert f"usage: reservoir-dqn {name}" in commands, f"reservoir-dqn {name} --help is missing"
    assert "usage: reservoir-dqn record add" in commands  # a sub-command's own help
    statuses = _page("exit-statuses")
    for status in Exit:
        assert f"| {int(status)} | {status.name.lower()} |" in statuses


def test_the_metrics_reference_names_every_declared_metric() -> None:
    text = _page("metrics")
    for name in ("score", "reliability", "solved", "regret", "exact_gap", "held_out_score", "td_loss", "epsilon"):
        assert name in text


@slow
def test_the_api_pages_render_the_docstrings(site: Path) -> None:
    page = re.sub(r"<[^>]+>", "", (site / "reference/api/reservoir-env/index.html").read_text())
    assert "DiscreteReservoirEnv" in page and "Observation" in page


def test_a_page_with_an_unknown_reference_fails() -> None:
    with pytest.raises(KeyError, match="no reference named 'nothing'"):
        docs_reference.expand("<!-- reference: nothing -->")


def test_the_readme_links_only_to_pages_and_files_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(((?!https?://)[^)#]+)", readme)
    assert any(target.startswith("docs/") for target in targets)
    for target in targets:
        assert (REPO / target).exists(), f"README links to {target}, which does not exist"
    assert len(readme.encode()) <= 15_000, "the README holds at most 15 KB; the rest belongs in docs/"
