"""An agent that also observes last month's actual inflow (``env.reservoir.observe_last_flow``)."""

from __future__ import annotations

import numpy as np
import torch

from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.advice import ReservoirAdvisor
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.mo_gym import ReservoirMOEnv
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.replay import RecordReplay
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import record_windows, whole_period
from tests.conftest import REPO
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE, RECORD

FLOW = CONFIG.model_copy(update={"observe_last_flow": True})
FLOW_MODEL = ReservoirModel.from_config(FLOW)


def _rollout(reservoir, slots: int = 4):
    env = PROFILE.make(DELAWARE.model_copy(update={"reservoir": reservoir}), list(range(slots)))
    return env.rollout(reservoir.horizon_months, RandomPolicy(MODEL.num_actions, 0), break_when_any_done=False)


def test_the_flow_is_its_quantile_for_its_calendar_month() -> None:
    record, split = load_split(FLOW)
    for month in (0, 5, 9):
        flows = np.round(record.volumes_hm3[split.fitting & (record.calendar_months == month)] / FLOW.unit_hm3)
        median = torch.tensor(float(np.exp(np.log(np.maximum(flows, 0.5)).mean())), dtype=torch.float64)
        quantiles = FLOW_MODEL.flow_quantile(torch.tensor([0.0, float(median), 1e6], dtype=torch.float64), month)
        assert abs(float(quantiles[1])) < 1e-9  # the lognormal's median is the middle
        assert -1.0 <= float(quantiles[0]) < float(quantiles[1]) < float(quantiles[2]) <= 1.0
    assert FLOW_MODEL.observation_size == MODEL.observation_size + 1


def test_on_the_chain_the_observation_is_still_a_function_of_the_sdps_state() -> None:
    """On chain episodes the flow is its class's value, so the exact account's observations are the env's."""
    rollout = _rollout(FLOW)
    observed = rollout["observation"].reshape(-1, FLOW_MODEL.observation_size)
    storage = rollout["storage"].reshape(-1).double()
    time_step, classes = rollout["time_step"].reshape(-1), rollout["inflow_class"].reshape(-1)
    assert torch.equal(observed, FLOW_MODEL.observation(storage, time_step, classes))
    # The first columns are the observation without the flow, unchanged.
    assert torch.equal(observed[:, :-1], MODEL.observation(storage, time_step, classes))


def test_on_the_record_the_agent_sees_the_real_flow_of_the_month_before() -> None:
    windows = record_windows(FLOW, FLOW_MODEL.chain, "held_out").head(3)
    env = DiscreteReservoirEnv(FLOW, len(windows))
    env.replay(windows)
    rollout = env.rollout(FLOW.horizon_months, RandomPolicy(MODEL.num_actions, 0))
    seen = rollout["observation"][..., -1]
    months = FLOW_MODEL.month(torch.arange(FLOW.horizon_months) - 1)
    assert windows.before is not None
    flows = torch.cat([windows.before.unsqueeze(1), windows.inflows[:, :-1]], dim=1)
    assert torch.allclose(seen.double(), FLOW_MODEL.flow_quantile(flows, months).float().double())
    # A real flow differs from its class's value, so the flow says more than the class.
    class_values = FLOW_MODEL.inflow_values[months, rollout["inflow_class"]]
    assert not torch.allclose(flows, class_values)


def test_a_checkpointed_state_without_the_flow_before_resumes_with_its_classs_value() -> None:
    env = DiscreteReservoirEnv(FLOW, 2)
    env.reset()
    state = env.get_state()
    del state["before"]  # a checkpoint written before observe_last_flow
    env.set_state(state)
    classes = state["classes"]
    assert isinstance(classes, torch.Tensor)
    expected = FLOW_MODEL.inflow_values[FLOW_MODEL.month(torch.tensor(-1)), classes[:, 0]]
    assert torch.equal(env.get_state()["before"], expected)


def test_advice_observes_the_operators_last_inflow() -> None:
    advisor = ReservoirAdvisor(FLOW)
    dry, wet = (advisor.state(2000.0, "Jun", None, inflow) for inflow in (150.0, 190.0))
    assert dry.inflow_class == wet.inflow_class  # the same class, yet two flows the agent tells apart
    assert float(advisor.observation(dry)[0, -1]) < float(advisor.observation(wet)[0, -1])
    assert torch.equal(advisor.observation(dry)[0, :-1], advisor.observation(wet)[0, :-1])


def test_the_exported_fields_name_the_flow() -> None:
    config = DELAWARE.model_copy(update={"reservoir": FLOW})
    fields = PROFILE.observation_fields(config, FLOW_MODEL.observation_size)
    assert fields[-1] == "last_inflow_quantile" and len(fields) == FLOW_MODEL.observation_size
    assert PROFILE.observation_bounds(config, FLOW_MODEL.observation_size)[-1] == (-1.0, 1.0)


def test_a_windows_flow_before_is_the_records_month_before_and_copies_keep_it() -> None:
    record, _ = load_split(FLOW)
    windows = record_windows(FLOW, FLOW_MODEL.chain, "held_out")
    first = [record.label(index) for index in range(len(record))].index(windows.starts[0])
    assert windows.before is not None
    assert float(windows.before[0]) == round(float(record.volumes_hm3[first - 1]) / FLOW.unit_hm3)
    assert float(windows.before[1]) == round(float(record.volumes_hm3[first + 11]) / FLOW.unit_hm3)
    tiled = windows.tile(2).starting_at(torch.zeros(2 * len(windows)))
    assert tiled.before is not None and torch.equal(tiled.before, windows.before.repeat(2))


def test_a_bootstrap_episode_starts_from_the_flow_before_its_first_year() -> None:
    config = FLOW.model_copy(update={"scenarios": "bootstrap"})
    model = ReservoirModel.from_config(config)
    years = model.water_years
    assert years is not None
    record, split = load_split(config)
    starts = [i for i in range(1, len(record) - 11) if split.fitting[i - 1 : i + 12].all()]
    starts = [i for i in starts if int(record.calendar_months[i]) == config.start_month]
    expected = torch.tensor([round(float(record.volumes_hm3[i - 1]) / config.unit_hm3) for i in starts])
    assert torch.equal(years.before, expected.double())
    env = DiscreteReservoirEnv(config, 3)
    env.seed_slots([4, 5, 6])
    reset = env.reset()
    for slot in range(3):  # the first year of each episode: the one whose inflows its first twelve months are
        (first,) = [
            i for i, year in enumerate(years.inflows) if torch.equal(year, env.get_state()["inflows"][slot, :12])
        ]
        month = model.month(torch.tensor(-1))
        assert torch.isclose(reset["observation"][slot, -1], model.flow_quantile(years.before[first], month).float())


def test_the_held_out_years_in_one_run_see_each_years_flow_before() -> None:
    config = DELAWARE.model_copy(update={"reservoir": FLOW})
    period = whole_period(FLOW, FLOW_MODEL.chain, "held_out")
    replay = RecordReplay(PROFILE, config, FLOW, record_windows(FLOW, FLOW_MODEL.chain, "held_out"), period)
    steps = replay._years(lambda first: RandomPolicy(MODEL.num_actions, 0), 1).steps
    month = FLOW_MODEL.month(torch.tensor(-1))
    assert period.before is not None
    for year in range(3):
        before = period.before[0] if year == 0 else period.inflows[0, 12 * year - 1]
        assert torch.isclose(steps["observation"][0, 12 * year, -1], FLOW_MODEL.flow_quantile(before, month).float())


def test_the_multi_objective_port_bounds_the_flow_in_minus_one_to_one() -> None:
    sets = [*overrides("reservoir-delaware", REPO / "recipes"), f"env.reservoir.record.path={RECORD}"]
    env = ReservoirMOEnv(REPO / "params.yaml", [*sets, "env.reservoir.observe_last_flow=true"])
    observation, _ = env.reset(seed=3)
    seen = [observation]
    for _ in range(FLOW.horizon_months - 1):
        observation, *_ = env.step(env.action_space.sample())
        seen.append(observation)
    assert all(env.observation_space.contains(value) for value in seen)
    assert min(float(value[-1]) for value in seen) < 0.0  # a dry month for its season: below the median
