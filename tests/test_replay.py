"""Replay: n-step transitions never bootstrap through a termination; agents never share a sample."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase
from torchrl.envs.utils import step_mdp

from reservoir_dqn.agent.dqn import TransitionWriter
from reservoir_dqn.config import load_config
from reservoir_dqn.training.replay import make_replay_buffer
from tests.conftest import REPO


class Countdown(EnvBase):
    """A terminating environment: slot ``i`` terminates after ``lengths[i]`` steps, reward 1 per step.

    The observation is ``[steps taken in the episode, episode length]``, so a stored transition
    says where in its episode it starts, where its next observation lies and whether that is
    the terminal one.
    """

    def __init__(self, lengths: list[int]) -> None:
        super().__init__(batch_size=torch.Size([len(lengths)]))
        self.lengths = torch.tensor(lengths)
        self.t = torch.zeros(len(lengths), dtype=torch.long)
        shape = self.batch_size
        self.observation_spec = Composite(observation=Unbounded(shape=(*shape, 2)), shape=shape)
        self.action_spec = Categorical(2, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1))
        self.full_done_spec = Composite(
            done=Bounded(0, 1, shape=(*shape, 1), dtype=torch.bool),
            terminated=Bounded(0, 1, shape=(*shape, 1), dtype=torch.bool),
            truncated=Bounded(0, 1, shape=(*shape, 1), dtype=torch.bool),
            shape=shape,
        )

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: object) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        reset = torch.ones_like(self.t, dtype=torch.bool) if mask is None else mask.reshape(-1)
        self.t[reset] = 0
        return TensorDict(
            {
                "observation": self._observation(),
                "done": torch.zeros(*self.batch_size, 1, dtype=torch.bool),
                "terminated": torch.zeros(*self.batch_size, 1, dtype=torch.bool),
                "truncated": torch.zeros(*self.batch_size, 1, dtype=torch.bool),
            },
            batch_size=self.batch_size,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.t = self.t + 1
        terminated = (self.t >= self.lengths).unsqueeze(-1)
        return TensorDict(
            {
                "observation": self._observation(),
                "reward": torch.ones(*self.batch_size, 1),
                "done": terminated.clone(),
                "terminated": terminated,
                "truncated": torch.zeros_like(terminated),
            },
            batch_size=self.batch_size,
        )

    def _observation(self) -> torch.Tensor:
        return torch.stack([self.t, self.lengths], dim=-1).float()

    def _set_seed(self, seed: int | None) -> None:
        pass


def test_an_n_step_transition_whose_window_holds_a_termination_is_terminal() -> None:
    n_steps, gamma, lengths = 3, 0.9, [2, 3, 5, 7]  # two agents of two environments each
    env = Countdown(lengths)
    buffer = make_replay_buffer(_dqn(buffer_size=1000, batch_size=8), agents=2)
    writer = TransitionWriter(buffer, agents=2, n_steps=n_steps, gamma=gamma)
    carry = env.reset()
    for _ in range(6):  # six batches of 5 steps: windows cross batch boundaries and episode ends
        batch = env.rollout(5, auto_reset=False, tensordict=carry, break_when_any_done=False)
        writer.write(batch)
        carry = env.maybe_reset(step_mdp(batch[..., -1]))
    stored = buffer[:].reshape(-1)
    start, length = stored["observation"].long().unbind(-1)
    steps = stored["steps_to_next_obs"].squeeze(-1)
    next_step = stored["next", "observation"][..., 0].long()
    assert torch.equal(next_step, start + steps)  # the next observation lies `steps` steps ahead ...
    assert torch.equal(steps, (length - start).clamp(max=n_steps))  # ... n, or fewer where the episode ends
    # The next observation is terminal exactly when the window reaches the episode's end; the
    # target must then be the discounted rewards alone, with no bootstrap from that observation.
    reaches_the_end = next_step == length
    terminated = stored["next", "terminated"].squeeze(-1)
    assert bool(reaches_the_end.any()) and bool((~reaches_the_end).any())
    assert torch.equal(terminated, reaches_the_end), (
        f"{int((reaches_the_end & ~terminated).sum())} of {int(reaches_the_end.sum())} transitions whose next "
        "observation is terminal are stored as non-terminal"
    )
    expected_return = (1 - gamma ** steps.double()) / (1 - gamma)  # reward 1 per step, discounted
    assert torch.allclose(stored["next", "reward"].squeeze(-1).double(), expected_return, atol=1e-5)


def _dqn(**overrides: object):
    return load_config(REPO / "params.yaml", [f"dqn.{key}={value}" for key, value in overrides.items()]).dqn


def _marked(rows: int, agents: int) -> TensorDict:
    """``rows`` transitions of each agent whose observation says (agent, row)."""
    agent = torch.arange(agents).expand(rows, agents).float()
    row = torch.arange(rows).unsqueeze(1).expand(rows, agents).float()
    marks = torch.stack([agent, row], dim=-1)
    return TensorDict(
        {
            "observation": marks,
            "action": torch.zeros(rows, agents, dtype=torch.long),
            ("next", "observation"): marks,
            ("next", "reward"): torch.zeros(rows, agents, 1),
            ("next", "done"): torch.zeros(rows, agents, 1, dtype=torch.bool),
            ("next", "terminated"): torch.zeros(rows, agents, 1, dtype=torch.bool),
        },
        batch_size=[rows, agents],
    )


@pytest.mark.parametrize("prioritized", [False, True])
def test_each_agent_replays_only_its_own_transitions_with_indices_of_its_own(prioritized: bool) -> None:
    agents, batch = 3, 64
    buffer = make_replay_buffer(_dqn(buffer_size=1000, batch_size=batch, prioritized=str(prioritized).lower()), agents)
    buffer.extend(_marked(400, agents))
    sample = buffer.sample()
    assert sample.batch_size == (agents * batch,)
    owner, row = sample["observation"].long().unbind(-1)
    assert torch.equal(owner, torch.arange(agents).repeat_interleave(batch))  # agent-major, never mixed
    rows = row.reshape(agents, batch)
    assert not torch.equal(rows[0], rows[1]) and not torch.equal(rows[1], rows[2])  # no shared replay indices
    if prioritized:
        # A priority update reaches only the agent it belongs to: agent 1's row 7 becomes dominant for agent 1 alone.
        index = sample["index"]
        priority = torch.full((agents * batch,), 1e-6)
        index[:, 0] = torch.where(index[:, 1] == 1, 7, index[:, 0])
        priority[index[:, 1] == 1] = 1e9
        buffer.update_priority(index, priority)
        again = buffer.sample()["observation"].long().reshape(agents, batch, 2)
        assert float((again[1, :, 1] == 7).double().mean()) > 0.9
        assert float((again[0, :, 1] == 7).double().mean()) < 0.5


def test_priorities_are_the_absolute_td_error_raised_to_alpha_once() -> None:
    """Schaul et al. (2016): P(i) ~ |delta_i|^alpha. DQNLoss's td_error is delta^2; alpha must not act twice."""
    from reservoir_dqn.agent.dqn import priorities

    alpha = 0.6
    buffer = make_replay_buffer(_dqn(buffer_size=1000, batch_size=4, prioritized="true", priority_alpha=alpha), 1)
    buffer.extend(_marked(2, 1))
    deltas = torch.tensor([1.0, 4.0])  # hand-made TD errors of the two stored rows
    td_error = deltas.pow(2)  # what DQNLoss writes
    index = torch.tensor([[0, 0], [1, 0]])
    buffer.update_priority(index, priorities(td_error))
    tree = buffer.sampler.samplers[0]._sum_tree
    stored = torch.tensor([tree[0], tree[1]])
    eps = buffer.sampler.samplers[0]._eps
    assert torch.allclose(stored, (deltas + eps).pow(alpha), rtol=1e-5)
    assert float(stored[1] / stored[0]) == pytest.approx(4.0**alpha, rel=1e-4)  # not 16 ** alpha = 4 ** 1.2


def test_beta_anneals_from_its_start_to_one_over_training() -> None:
    from reservoir_dqn.training.replay import anneal_beta

    config = _dqn(prioritized="true", priority_beta=0.4, priority_beta_frames=100_000)
    buffer = make_replay_buffer(config, 2)
    betas = []
    for frames in (0, 50_000, 100_000, 150_000):
        anneal_beta(buffer, config, frames)
        betas.append([sampler.beta for sampler in buffer.sampler.samplers])
    assert betas == [[0.4, 0.4], [pytest.approx(0.7)] * 2, [1.0, 1.0], [1.0, 1.0]]


def test_an_agents_replay_indices_do_not_depend_on_how_many_agents_train() -> None:
    alone = make_replay_buffer(_dqn(buffer_size=1000, batch_size=32), 1, seeds=[123])
    beside = make_replay_buffer(_dqn(buffer_size=1000, batch_size=32), 3, seeds=[123, 7, 8])
    alone.extend(_marked(400, 1))
    beside.extend(_marked(400, 3))
    for _ in range(3):
        mine = alone.sample()["observation"][:, 1]
        ours = beside.sample()["observation"].reshape(3, 32, 2)[0, :, 1]
        assert torch.equal(mine, ours)
