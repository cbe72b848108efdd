"""Parameter validation: every bad input gives one line naming the key, exit status 2, no output touched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from reservoir_dqn.commands import evaluate, train
from reservoir_dqn.config import ConfigError, load_config, rules
from reservoir_dqn.envs.reservoir.settings import RESERVOIR_RULES, ReservoirConfig
from tests.conftest import REPO, tiny_params, tree_digest


def _delete(params: dict, dotted: str) -> dict:
    node = params
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node[part]
    del node[leaf]
    return params


def _set(params: dict, dotted: str, value: object) -> dict:
    node = params
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return params


# (case id, how to break params.yaml, --set overrides, fragments the one-line message must contain)
BAD_FILES = [
    ("unknown key", lambda p: _set(p, "dqn.gama", 0.9), [], ["'dqn.gama'", "did you mean 'dqn.gamma'"]),
    ("unknown section", lambda p: {**p, "trian": {}}, [], ["'trian'", "did you mean 'train'"]),
    ("string for float", lambda p: _set(p, "dqn.lr", "fast"), [], ["dqn.lr", '"fast"']),
    ("float for int", lambda p: _set(p, "dqn.batch_size", 64.5), [], ["dqn.batch_size", "64.5"]),
    ("bool for int", lambda p: _set(p, "train.total_frames", True), [], ["train.total_frames", "true"]),
    ("lr zero", lambda p: _set(p, "dqn.lr", 0.0), [], ["dqn.lr", "0.0", "greater than 0"]),
    ("lr negative", lambda p: _set(p, "dqn.lr", -0.1), [], ["dqn.lr", "-0.1"]),
    ("gamma above one", lambda p: _set(p, "dqn.gamma", 1.5), [], ["dqn.gamma", "1.5"]),
    ("gamma zero", lambda p: _set(p, "dqn.gamma", 0.0), [], ["dqn.gamma", "0.0"]),
    (
        "eps_end above eps_start",
        lambda p: _set(p, "dqn.eps_end", 0.9) and _set(p, "dqn.eps_start", 0.5),
        [],
        ["dqn.eps_end (0.9)", "dqn.eps_start (0.5)"],
    ),
    (
        "batch larger than buffer",
        lambda p: _set(p, "dqn.batch_size", 4096),
        [],
        ["dqn.batch_size (4096)", "dqn.buffer_size (2000)"],
    ),
    ("missing section", lambda p: _delete(p, "dqn"), [], ["missing section 'dqn'"]),
    ("missing key", lambda p: _delete(p, "dqn.gamma"), [], ["missing key 'dqn.gamma'"]),
    (
        "mistyped key names the typo",
        lambda p: _set(_delete(p, "dqn.gamma"), "dqn.gama", 0.95),
        [],
        ["unknown key 'dqn.gama'", "did you mean 'dqn.gamma'"],
    ),
    (
        "search space key that is not a parameter",
        lambda p: p["tune"]["space"].update({"dqn.lrr": {"distribution": "float", "low": 0.1, "high": 0.2}}) or p,
        [],
        ["tune.space", "'dqn.lrr'", "did you mean 'dqn.lr'"],
    ),
    (
        "search dimension without bounds",
        lambda p: p["tune"]["space"].update({"dqn.tau": {"distribution": "float", "low": 0.5, "high": 0.1}}) or p,
        [],
        ["tune.space.dqn.tau", "low < high"],
    ),
    ("no seeds", lambda p: _set(p, "train.seeds", 0), [], ["train.seeds", "0"]),
    ("absolute output path", lambda p: _set(p, "paths.model", "/etc/model.pt"), [], ["paths.model", "/etc/model.pt"]),
    ("output path escapes", lambda p: _set(p, "paths.train_metrics", "../train.json"), [], ["paths.train_metrics"]),
    (
        "frames_per_batch vs num_envs",
        lambda p: _set(p, "train.frames_per_batch", 42),
        [],
        ["train.frames_per_batch (42)", "env.num_envs (4)"],
    ),
    ("device", lambda p: _set(p, "train.device", "tpu"), [], ["train.device", '"tpu"']),
    ("negative seed", lambda p: _set(p, "seed", -1), [], ["seed", "-1"]),
    ("empty hidden sizes", lambda p: _set(p, "dqn.hidden_sizes", []), [], ["dqn.hidden_sizes"]),
    ("hidden size of wrong type", lambda p: _set(p, "dqn.hidden_sizes", ["wide"]), [], ["dqn.hidden_sizes.0", "wide"]),
    (
        "warm-up above buffer",
        lambda p: _set(p, "train.min_replay_size", 5000),
        [],
        ["train.min_replay_size (5000)", "dqn.buffer_size (2000)"],
    ),
    (
        "checkpoint interval",
        lambda p: _set(p, "train.checkpoint_interval_frames", 210),
        [],
        ["train.checkpoint_interval_frames (210)", "train.frames_per_batch (40)"],
    ),
    ("evaluation seeds overlap training", lambda p: _set(p, "evaluate.seed", 7), [], ["evaluate.seed", "7"]),
    ("unknown loss", lambda p: _set(p, "dqn.loss", "mse"), [], ["dqn.loss", '"mse"']),
    ("override unknown key", lambda p: p, ["dqn.gamme=0.9"], ["'dqn.gamme'", "did you mean 'dqn.gamma'"]),
    (
        "override of a key an older file lacks",
        lambda p: {**p, "dqn": {k: v for k, v in p["dqn"].items() if k != "gamma"}},
        ["dqn.gamma=0.9"],
        ["the parameter file has no 'dqn.gamma', which this version reads: add it"],
    ),
    ("override without value", lambda p: p, ["dqn.gamma"], ["dqn.gamma", "KEY=VALUE"]),
    ("override out of range", lambda p: p, ["dqn.gamma=2"], ["dqn.gamma", "2"]),
    ("override path outside", lambda p: p, ["paths.checkpoints=/tmp/elsewhere"], ["paths.checkpoints"]),
    ("override under a value", lambda p: p, ["seed.value=3"], ["'seed.value'"]),
]


@pytest.mark.parametrize(("case", "breaker", "overrides", "fragments"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_parameters_give_one_line_naming_the_key(tmp_path, case, breaker, overrides, fragments) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(breaker(tiny_params())))
    with pytest.raises(ConfigError) as raised:
        load_config(path, overrides)
    message = str(raised.value)
    assert "\n" not in message
    # The message says where the bad value came from: the --set that gave it, else the file.
    assert message.startswith(f"--set {overrides[-1]}" if overrides else str(path)), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: 0\ndqn:\n  gamma: [0.9\n")
    with pytest.raises(ConfigError, match=r"params.yaml: line \d+, column \d+: YAML syntax error"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("- seed\n- env\n")
    with pytest.raises(ConfigError, match="expected a mapping of sections"):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parameter file not found"):
        load_config(tmp_path / "nope.yaml")


def test_yaml_is_loaded_safely(tmp_path: Path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("seed: !!python/object/apply:os.system ['touch pwned']\n")
    with pytest.raises(ConfigError, match="YAML syntax error"):
        load_config(path)
    assert not (tmp_path / "pwned").exists()


def test_repository_params_are_valid_and_exponents_are_floats(tmp_path: Path) -> None:
    config = load_config(REPO / "params.yaml")
    assert config.dqn.lr > 0
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params()).replace("lr: 0.001", "lr: 5e-4"))
    assert load_config(path).dqn.lr == pytest.approx(5e-4)


def test_overrides_and_shortcuts(project: Path) -> None:
    config = load_config(project / "params.yaml", ["dqn.gamma=0.95", "dqn.hidden_sizes=[8, 8]"])
    assert config.dqn.gamma == 0.95 and config.dqn.hidden_sizes == (8, 8)


def test_config_is_frozen(tiny_config) -> None:
    with pytest.raises(Exception, match="frozen"):
        tiny_config.dqn.gamma = 0.5  # type: ignore[misc]


def test_every_key_of_params_yaml_is_a_config_field() -> None:
    """No dead keys: params.yaml and the typed config have exactly the same keys."""
    config = load_config(REPO / "params.yaml")
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def dotted(tree: dict, prefix: str = "") -> set[str]:
        keys = set()
        for key, value in tree.items():
            keys |= dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}"}
        return keys

    assert dotted(params) == set(config.flat())


def test_training_hash_ignores_budget_and_checkpoints_but_not_hyperparameters(project: Path) -> None:
    base = load_config(project / "params.yaml")
    longer = load_config(project / "params.yaml", ["train.total_frames=4000", "train.checkpoint_interval_frames=400"])
    other = load_config(project / "params.yaml", ["dqn.gamma=0.9"])
    assert base.training_hash == longer.training_hash != other.training_hash


# Reservoir settings that make the MDP meaningless: (--set overrides, fragments of the one line).
R = "env.reservoir"
BAD_RESERVOIR = [
    ([f"{R}.horizon_months=6"], [f"{R}.horizon_months = 6", "greater than or equal to 12"]),
    ([f"{R}.horizon_months=0"], [f"{R}.horizon_months = 0"]),
    ([f"{R}.horizon_months=12.5"], [f"{R}.horizon_months = 12.5", "integer"]),
    ([f"{R}.start_month=12"], [f"{R}.start_month = 12", "less than or equal to 11"]),
    ([f"{R}.start_month=-1"], [f"{R}.start_month = -1"]),
    ([f"{R}.unit_hm3=0"], [f"{R}.unit_hm3 = 0"]),
    ([f"{R}.capacity=0"], [f"{R}.capacity = 0", "greater than 0"]),
    ([f"{R}.min_storage=40"], [f"{R}.min_storage (40) must be below {R}.capacity (40)"]),
    ([f"{R}.min_storage=-1"], [f"{R}.min_storage = -1"]),
    ([f"{R}.initial_storage=41"], [f"{R}.initial_storage (41) lies outside [0, {R}.capacity (40)]"]),
    ([f"{R}.initial_storage=-3"], [f"{R}.initial_storage = -3"]),
    ([f"{R}.release_levels=[3]"], [f"{R}.release_levels = [3]", "at least 2 items"]),
    ([f"{R}.release_levels=[0,4,3,5,6,8]"], [f"{R}.release_levels ([0, 4, 3, 5, 6, 8]) must be strictly ascending"]),
    ([f"{R}.release_levels=[0,3,3,4,5,6,8]"], [f"{R}.release_levels ([0, 3, 3, 4, 5, 6, 8])", "strictly ascending"]),
    (
        [f"{R}.release_levels=[0,2,4,5,6,8,10,12]"],
        [f"{R}.demand (3 in January) is not one of {R}.release_levels ([0, 2, 4, 5, 6, 8, 10, 12])"],
    ),
    ([f"{R}.demand=[3,3,3,4,5,6,7,8,6,4,3,3]"], [f"{R}.demand (7 in July) is not one of {R}.release_levels"]),
    ([f"{R}.demand=[3,3,3]"], [f"{R}.demand = [3, 3, 3]", "at least 12 items"]),
    ([f"{R}.demand=[3,3,3,4,5,6,8,8,6,4,3,3,3]"], [f"{R}.demand", "at most 12 items"]),
    ([f"{R}.demand=[-3,3,3,4,5,6,8,8,6,4,3,3]"], [f"{R}.demand.0 = -3"]),
    ([f"{R}.turbine_capacity=0"], [f"{R}.turbine_capacity = 0"]),
    ([f"{R}.head_min_m=-60.0"], [f"{R}.head_min_m = -60.0", "greater than 0"]),
    ([f"{R}.head_max_m=50.0"], [f"{R}.head_max_m (50.0) is below {R}.head_min_m (60.0)"]),
    ([f"{R}.efficiency=1.2"], [f"{R}.efficiency = 1.2", "less than or equal to 1"]),
    ([f"{R}.efficiency=-0.88"], [f"{R}.efficiency = -0.88", "greater than 0"]),
    ([f"{R}.inflow_median=[3.0,3.0,5.0,10.0,20.0,22.0,12.0,6.0,4.0,4.0,4.0,0.0]"], [f"{R}.inflow_median.11 = 0.0"]),
    ([f"{R}.inflow_median=[3.0,3.0,5.0]"], [f"{R}.inflow_median", "at least 12 items"]),
    ([f"{R}.inflow_cv=[-0.3,0.3,0.4,0.5,0.45,0.4,0.45,0.5,0.5,0.4,0.35,0.3]"], [f"{R}.inflow_cv.0 = -0.3"]),
    ([f"{R}.inflow_classes=1"], [f"{R}.inflow_classes = 1", "greater than or equal to 2"]),
    ([f"{R}.scenarios=record"], [f"{R}.scenarios (record) needs {R}.inflow_model (lognormal) to be record"]),
    ([f"{R}.observe_last_flow=true"], [f"{R}.observe_last_flow (true) needs {R}.inflow_model (lognormal) to be"]),
    ([f"{R}.record.validation=[1990,2003]"], ["record.validation ([1990, 2003]) needs env.reservoir.inflow_model"]),
    ([f"{R}.bootstrap_block_years=0"], [f"{R}.bootstrap_block_years = 0", "greater than 0"]),
    ([f"{R}.inflow_model=markov"], [f'{R}.inflow_model = "markov"', "'lognormal' or 'record'"]),
    ([f"{R}.record.pseudocount=-1"], [f"{R}.record.pseudocount = -1", "greater than or equal to 0"]),
    ([f"{R}.weight_deficit=-3.0"], [f"{R}.weight_deficit = -3.0", "greater than or equal to 0"]),
    ([f"{R}.weight_spill=high"], [f"{R}.weight_spill", '"high"']),
    (
        [f"{R}.weight_{name}=0.0" for name in ("energy", "deficit", "spill", "violation")],
        [f"{R}.weight_energy (0.0), {R}.weight_deficit (0.0)", "are all 0: every policy is optimal"],
    ),
]


@pytest.mark.parametrize(("overrides", "fragments"), BAD_RESERVOIR, ids=[c[0][-1] for c in BAD_RESERVOIR])
def test_a_meaningless_reservoir_is_refused_in_one_line_naming_the_key(
    project: Path, capsys, overrides: list[str], fragments: list[str]
) -> None:
    for name, content in {"models/model.pt": b"old model", "metrics/train.json": b"{}"}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(content)
    before = tree_digest(project)
    assert train.main([argument for override in overrides for argument in ("--set", override)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --set {overrides[-1]}: "), lines
    assert all(fragment in lines[0] for fragment in fragments), lines[0]
    assert tree_digest(project) == before


def test_the_docs_list_every_reservoir_rule() -> None:
    """The parameters' reference generates the table (tools/docs_reference.py) and says how many bad values this
    file tries; the fault table says the same number."""
    table = rules.markdown_table(ReservoirConfig, "env.reservoir", RESERVOIR_RULES)
    page = (REPO / "docs/reference/parameters.md").read_text()
    assert "<!-- reference: reservoir-rules -->" in page and f"tries {len(BAD_RESERVOIR)} bad values" in page
    assert f"({len(BAD_RESERVOIR)} tried)" in (REPO / "docs/how-to/faults.md").read_text()
    assert len(RESERVOIR_RULES) >= 6 and table.count("\n") >= 20


@pytest.mark.parametrize("stage", [train, evaluate])
def test_stage_exits_2_and_touches_nothing_on_bad_params(project: Path, capsys, stage) -> None:
    for name, content in {"models/model.pt": b"old model", "metrics/train.json": b"{}", "checkpoints/x": b"c"}.items():
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).write_bytes(content)
    before = tree_digest(project)
    assert stage.main(["--set", "dqn.gamma=7"]) == 2
    assert stage.main(["--gamma", "0"] if stage is train else ["--set", "dqn.gamma=0"]) == 2  # a shortcut: train's
    assert stage.main(["--params", "missing.yaml"]) == 2
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("gamma:", "gama:"))
    assert stage.main(["--set", "paths.model=models/model.pt"]) == 2  # a path option, not the culprit
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert err[0].startswith("error: --set dqn.gamma=7: dqn.gamma") and "7" in err[0]
    assert err[3] == "error: params.yaml: unknown key 'dqn.gama' (did you mean 'dqn.gamma'?)"
    (project / "params.yaml").write_text((project / "params.yaml").read_text().replace("gama:", "gamma:"))
    assert tree_digest(project) == before
