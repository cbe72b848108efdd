"""Validation years of a record (``env.reservoir.record.validation``): set aside from the fit and from training, and
the years training validates on."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import ConfigError, load_config
from reservoir_dqn.envs.reservoir.baselines import SDPPolicy, reservoir_optimum
from reservoir_dqn.envs.reservoir.inflows import fit_chain
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.records import RecordError
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import check_held_out, fitting_water_years, record_windows
from reservoir_dqn.training import session as session_module
from reservoir_dqn.training.loop import train
from tests.conftest import REPO, TINY
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE
from tests.delaware import RECORD as RECORD_PATH

YEARS = (1990, 2003)  # Oct 1990 to Sep 2004: five ten-year windows
VALIDATED = CONFIG.model_copy(update={"record": CONFIG.record.model_copy(update={"validation": YEARS})})
VALIDATED_MODEL = ReservoirModel.from_config(VALIDATED)


def _with(**record: object):
    return CONFIG.model_copy(update={"record": CONFIG.record.model_copy(update=record)})


def test_validation_months_are_kept_out_of_the_fit_the_windows_and_the_bootstrap() -> None:
    record, split = load_split(VALIDATED)
    assert split.validation is not None
    begin, end = split.validation
    assert (record.label(begin), record.label(end)) == ("1990-10", "2004-09")
    assert not split.fitting[begin : end + 1].any() and split.fitting[begin - 1]
    _, whole = load_split(CONFIG)
    assert int(whole.fitting.sum() - split.fitting.sum()) == end - begin + 1
    assert not torch.equal(VALIDATED_MODEL.chain.transitions, MODEL.chain.transitions)  # refitted without them
    horizon = VALIDATED.horizon_months
    for start in record_windows(VALIDATED, VALIDATED_MODEL.chain, "training").starts:
        first = (int(start[:4]) - record.first[0]) * 12 + int(start[5:]) - record.first[1]
        assert first + horizon - 1 < begin or first - 1 > end, start  # no month of it, nor the month before
    bootstrap = VALIDATED.model_copy(update={"scenarios": "bootstrap"})
    years = fitting_water_years(bootstrap, VALIDATED_MODEL.chain)
    assert len(years.inflows) == 59 - 14  # 1945-10 to 2004-09 less the fourteen validation water years
    flows = torch.from_numpy(np.round(record.volumes_hm3 / CONFIG.unit_hm3))
    validation_years = {tuple(flows[month : month + 12].tolist()) for month in range(begin, end + 1, 12)}
    assert not validation_years & {tuple(year.tolist()) for year in years.inflows}


def test_the_validation_windows_lie_in_the_validation_years_and_the_held_out_ones_do_not_move() -> None:
    validation = record_windows(VALIDATED, VALIDATED_MODEL.chain, "validation")
    assert validation.starts == ("1990-10", "1991-10", "1992-10", "1993-10", "1994-10")
    assert (
        record_windows(VALIDATED, VALIDATED_MODEL.chain, "held_out").starts
        == record_windows(CONFIG, MODEL.chain, "held_out").starts
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"validation": (1935, 1950)}, "env.reservoir.record.validation = [1935, 1950]: the years from Oct 1935 to "
         "Sep 1951 are not all in the record"),
        ({"validation": (1995, 2006)}, "env.reservoir.record.validation = [1995, 2006]: the months 1995-10 to "
         "2007-09 are not all fitting years (1945 to 2004)"),
        ({"validation": (1960, 1975), "held_out": (1970, 1980)}, "env.reservoir.record.validation = [1960, 1975]: "
         "the months 1960-10 to 1976-09 overlap the held-out months"),
        ({"validation": (1990, 1995)}, "env.reservoir.record.validation = [1990, 1995]: its 72 months (1990-10 to "
         "1996-09) hold no whole window of 120 months starting in month 10: validate on more years"),
    ],
)  # fmt: skip
def test_validation_years_the_split_cannot_hold_are_refused_naming_the_years(
    record: dict[str, object], message: str
) -> None:
    with pytest.raises(RecordError, match=re.escape(message)):
        check_held_out(_with(**record))


def test_validation_years_in_the_wrong_order_are_refused_in_one_line() -> None:
    sets = [*overrides("reservoir-delaware", REPO / "recipes"), "env.reservoir.record.validation=[2003,1990]"]
    with pytest.raises(ConfigError, match=re.escape("validation ([2003, 1990]): the first year comes after the last")):
        load_config(REPO / "params.yaml", sets)


def test_the_markov_sdp_scores_1_on_the_validation_years() -> None:
    config = DELAWARE.model_copy(update={"reservoir": VALIDATED})
    years = PROFILE.validation_years(config)
    assert years is not None and PROFILE.validation_years(DELAWARE) is None
    from reservoir_dqn.training.validation import validation_set

    full = load_config(REPO / "params.yaml").model_copy(update={"env": config})
    validation = validation_set(PROFILE, full, VALIDATED_MODEL.num_actions)
    sdp = validation.play(SDPPolicy(reservoir_optimum(VALIDATED)), 1)
    assert float(validation.reference.score(sdp)) == pytest.approx(1.0, abs=1e-12)
    assert "5 windows of the record's validation years (1990-10 to 2004-09)" in validation.episodes


def test_training_validates_every_agent_on_the_validation_years(tmp_path) -> None:
    sets = [
        *overrides("reservoir-delaware", REPO / "recipes"),
        f"env.reservoir.record.path={RECORD_PATH}",
        "env.reservoir.record.validation=[1990,2003]",
        *(f"{key}={value}" for key, value in TINY.items() if isinstance(value, (int, bool))),
        "train.total_frames=400",
    ]
    config = load_config(REPO / "params.yaml", sets)
    session = session_module.start(config, None)
    result = train(session)
    summary = result.summary
    assert summary.validation_reference.episodes is not None
    assert "validation years (1990-10 to 2004-09)" in summary.validation_reference.episodes
    years = PROFILE.validation_years(config.env)
    assert years is not None
    returns = years.rewards(result.final, config.train.seeds).sum(dim=-1).mean(dim=-1)
    reference = session.validation.reference
    for agent in summary.agents:  # the final validation is the final networks' score on those windows
        assert agent.final_validation_return == pytest.approx(float(returns[agent.seed_index]), rel=1e-9)
        assert agent.final_validation_score == pytest.approx(float(reference.score(returns[agent.seed_index])))


def test_validation_years_inside_the_record_leak_into_no_fit_window_or_bootstrap_year() -> None:
    """1960-1975 (1960-10 to 1976-09): fitting months on both sides, so a training window or water year could start
    right after them and read their last month as its first class."""
    inside = _with(validation=(1960, 1975)).model_copy(update={"observe_last_flow": True})
    model = ReservoirModel.from_config(inside)
    record, split = load_split(inside)
    begin, end = split.validation  # type: ignore[misc]
    assert (record.label(begin), record.label(end)) == ("1960-10", "1976-09")
    for start in record_windows(inside, model.chain, "training").starts:
        first = (int(start[:4]) - record.first[0]) * 12 + int(start[5:]) - record.first[1]
        assert first + inside.horizon_months - 1 < begin or first - 1 > end, start
    years = fitting_water_years(inside.model_copy(update={"scenarios": "bootstrap"}), model.chain)
    flows = np.round(record.volumes_hm3 / inside.unit_hm3)
    after = tuple(flows[end + 1 : end + 13].tolist())  # 1976-10: its month before is a validation month
    assert after not in {tuple(year.tolist()) for year in years.inflows}
    assert len(years.inflows) == 59 - 16 - 1
    kept = split.fitting
    linked = np.diff(np.flatnonzero(kept)) == 1
    assert int((~linked).sum()) == 1  # the chain is not linked across the validation years
    volumes = record.volumes_hm3[kept] / inside.unit_hm3
    expected = fit_chain(volumes, record.calendar_months[kept], inside.inflow_classes, 0.0, linked)
    assert torch.equal(model.chain.transitions, expected.transitions)
    logs = np.log(np.maximum(flows, 0.5))
    assert model.flow_moments is not None
    for month in range(12):
        values = logs[kept & (record.calendar_months == month)]
        assert float(model.flow_moments[month, 0]) == pytest.approx(values.mean(), abs=1e-12)


def test_a_validation_window_never_starts_from_a_held_out_month() -> None:
    """Held out 1950-1959 (to 1960-09), validation 1960-1975: the window from 1960-10 would read Sep 1960's class."""
    config = _with(held_out=(1950, 1959), validation=(1960, 1975))
    model = ReservoirModel.from_config(config)
    starts = record_windows(config, model.chain, "validation").starts
    assert starts[0] == "1961-10" and len(starts) == 6
    assert record_windows(config, model.chain, "held_out").starts == ("1950-10",)
