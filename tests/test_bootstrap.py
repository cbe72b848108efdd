"""Learning from a moving-block bootstrap of the fitting water years, or from a mixture of it and the chain."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import RecordError
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import fitting_water_years
from tests.conftest import REPO
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE

BOOTSTRAP = CONFIG.model_copy(update={"scenarios": "bootstrap"})
YEARS = fitting_water_years(BOOTSTRAP, MODEL.chain)


def _inflows(reservoir, slots: int = 8, seed: int = 1) -> torch.Tensor:
    """``[slots, 2 H]`` the inflows of two episodes in each slot of a random policy's rollout."""
    env = PROFILE.make(DELAWARE.model_copy(update={"reservoir": reservoir}), list(range(seed, seed + slots)))
    horizon = reservoir.horizon_months
    rollout = env.rollout(2 * horizon, RandomPolicy(MODEL.num_actions, 0), break_when_any_done=False)
    return rollout["next", "inflow"].double()


def _year_of(months: torch.Tensor) -> int | None:
    """The fitting water year whose inflows ``months`` (12) are, if any."""
    matches = [index for index, year in enumerate(YEARS.inflows) if torch.equal(year, months)]
    return matches[0] if matches else None


def test_the_water_years_are_the_fitting_years_each_from_the_start_month() -> None:
    record, split = load_split(CONFIG)
    assert YEARS.inflows.shape == (59, 12)  # 1945-10 to 2004-09
    first = (1945 - 1945) * 12 + 9
    assert torch.equal(YEARS.inflows[0], torch.from_numpy(np.round(record.volumes_hm3[first : first + 12] / 106.0)))
    assert int(YEARS.classes[0, 0]) == MODEL.chain.classify(8, float(record.volumes_hm3[first - 1] / 106.0))
    assert YEARS.block_starts == tuple(range(57))  # blocks of 3 consecutive years
    assert split.fitting.sum() == 60 * 12


def test_an_episode_joins_blocks_of_consecutive_fitting_years_and_reads_each_class_from_the_month_before() -> None:
    inflows = _inflows(BOOTSTRAP)
    horizon = CONFIG.horizon_months
    starts = set()
    for episode in (inflows[:, :horizon], inflows[:, horizon:]):
        for row in episode:
            years = [_year_of(row[month : month + 12]) for month in range(0, horizon, 12)]
            assert None not in years, "a year of an episode that is no fitting water year"
            for block in range(0, len(years), 3):  # 10 years: blocks of 3, 3, 3 and the first year of a fourth
                chunk = years[block : block + 3]
                assert chunk == list(range(chunk[0], chunk[0] + len(chunk)))
                starts.add(chunk[0])
    assert len(starts) > 30  # 16 episodes of 4 blocks drawn among 57 starts

    # The classes the agent observes: the month before the first year, then each month's own inflow's.
    env = PROFILE.make(DELAWARE.model_copy(update={"reservoir": BOOTSTRAP}), [5])
    rollout = env.rollout(CONFIG.horizon_months, RandomPolicy(MODEL.num_actions, 0))
    classes, flows = rollout["next", "inflow_class"][0], rollout["next", "inflow"][0].double()
    first = _year_of(flows[:12])
    assert first is not None and int(rollout["inflow_class"][0, 0]) == int(YEARS.classes[first, 0])
    for month in range(0, CONFIG.horizon_months, 12):  # the class after each month: that month's real flow's
        year = _year_of(flows[month : month + 12])
        assert year is not None and torch.equal(classes[month : month + 12], YEARS.classes[year, 1:])


def test_a_held_out_drought_never_enters_a_bootstrap_episode() -> None:
    drought = BOOTSTRAP.model_copy(update={"record": CONFIG.record.model_copy(update={"held_out": (1961, 1972)})})
    model = ReservoirModel.from_config(drought)
    # Less the 12 held-out years and 1973-10, whose month before (its first class) is held out.
    assert model.water_years is not None and len(model.water_years.inflows) == 59 - 12 - 1
    record, split = load_split(drought)
    begin, end = split.held_out  # type: ignore[misc]
    held = {tuple(np.round(record.volumes_hm3[index : index + 12] / 106.0)) for index in range(begin, end, 12)}
    for year in model.water_years.inflows:
        assert tuple(year.numpy()) not in held
    # No block spans the gap: 1960 and 1973 are not consecutive.
    for start in model.water_years.block_starts:
        assert start + 2 < 16 or start >= 16  # years 0..15 are 1945-1960, 16.. are 1974-2004


def test_the_same_seeds_draw_the_same_episodes() -> None:
    assert torch.equal(_inflows(BOOTSTRAP, slots=3, seed=7), _inflows(BOOTSTRAP, slots=3, seed=7))
    assert not torch.equal(_inflows(BOOTSTRAP, slots=3, seed=7), _inflows(BOOTSTRAP, slots=3, seed=8))


@pytest.mark.parametrize(("share", "chain_episodes"), [(0.0, (0, 0)), (1.0, (16, 16)), (0.5, (3, 13))])
def test_a_mixture_draws_chain_episodes_with_its_share(share: float, chain_episodes: tuple[int, int]) -> None:
    mixture = CONFIG.model_copy(update={"scenarios": "mixture", "mixture_chain_share": share})
    inflows = _inflows(mixture)
    horizon = CONFIG.horizon_months
    months = (torch.arange(horizon) + CONFIG.start_month) % 12
    chain = 0
    for episode in (inflows[:, :horizon], inflows[:, horizon:]):
        for row in episode:
            from_chain = all(bool((MODEL.inflow_values[months[t]] == row[t]).any()) for t in range(horizon))
            from_years = all(_year_of(row[m : m + 12]) is not None for m in range(0, horizon, 12))
            assert from_chain or from_years
            chain += from_chain and not from_years
    assert chain_episodes[0] <= chain <= chain_episodes[1]


def test_blocks_longer_than_any_run_of_fitting_years_are_refused_in_one_line() -> None:
    long = BOOTSTRAP.model_copy(update={"bootstrap_block_years": 61})
    message = (
        r"^env\.reservoir\.bootstrap_block_years = 61: record .* has 59 fitting water years from month 10, "
        r"and no 61 consecutive ones: shorten the blocks or fit more years$"
    )
    with pytest.raises(RecordError, match=message):
        fitting_water_years(long, MODEL.chain)


@pytest.mark.parametrize("scenarios", ["bootstrap", "mixture"])
def test_a_bootstrap_needs_a_record(scenarios: str) -> None:
    with pytest.raises(ConfigError, match=f"scenarios \\({scenarios}\\) needs .*inflow_model \\(lognormal\\)"):
        load_config(REPO / "params.yaml", [f"env.reservoir.scenarios={scenarios}"])
