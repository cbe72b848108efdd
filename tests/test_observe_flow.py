"""An agent that also observes last month's actual inflow (``env.reservoir.observe_last_flow``)."""

from __future__ import annotations

import numpy as np
import torch

from reservoir_dqn.envs.baselines import RandomPolicy
from reservoir_dqn.envs.reservoir.advice import ReservoirAdvisor
from reservoir_dqn.envs.reservoir.env import DiscreteReservoirEnv
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.split import load_split
from reservoir_dqn.envs.reservoir.windows import record_windows
from tests.delaware import CONFIG, DELAWARE, MODEL, PROFILE

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
