"""What the rest of the pipeline asks of an environment: one :class:`EnvProfile` per environment.

Training, evaluation, the stages and tracking never branch on an environment's name: they
ask its profile how to build it, what its episodes mean (metrics and the score), what it is
compared with (baselines and the optimum), what to log while training, which rows and
figures describe an evaluation, and how to save and restore its state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from pydantic import BaseModel
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase

from reservoir_dqn.common.metrics import MetricGroup
from reservoir_dqn.config import EnvConfig

if TYPE_CHECKING:  # matplotlib and pandas are imported where figures and tables are made
    from matplotlib.figure import Figure
    from pandas import DataFrame

    from reservoir_dqn.envs.reservoir.account import Account


@dataclass(frozen=True)
class Episodes:
    """The first episode of each of ``N`` evaluation environments.

    :ivar steps: the rollout, shape ``[N, T]``, with a boolean ``valid`` entry that is true
        for the steps of the first episode (later steps belong to episodes that started after
        it and are ignored).
    :ivar returns: undiscounted return of each episode, ``[N]``.
    :ivar lengths: number of steps of each episode, ``[N]``.
    """

    steps: TensorDictBase
    returns: torch.Tensor
    lengths: torch.Tensor

    def __len__(self) -> int:
        return int(self.returns.shape[0])

    def part(self, start: int, stop: int) -> Episodes:
        """Episodes ``start`` to ``stop - 1`` (one agent's share of a batched evaluation)."""
        return Episodes(self.steps[start:stop], self.returns[start:stop], self.lengths[start:stop])


@dataclass(frozen=True)
class Metric:
    """A metric of a policy's test episodes; the headline's are what ``dvc exp show``, the CI gate and the champion
    look at.

    :param name: key in the metrics files (``score``, ``return``, ``reliability``).
    :param label: what a reader sees in tables and figures.
    :param low: the least value the metric can take (``-inf``: unbounded below); no interval reaches below it.
    :param high: the greatest value the metric can take (``inf``: unbounded above); no interval reaches above it.
    """

    name: str
    label: str
    low: float = -math.inf
    high: float = math.inf


SCORE = Metric("score", "normalised score (0 random, 1 optimum)")
RETURN = Metric("return", "mean episode return")
EPISODE = MetricGroup(
    "episode",
    ("return", "length", "count"),
    description="training episodes that ended in the interval: mean return and length, how many",
)


@dataclass(frozen=True)
class Replayed:
    """What a policy did replaying the held-out windows, ``copies`` times over (stacked agents).

    :ivar rewards: ``[copies, W, H]`` each step's reward.
    :ivar performance: per copy, the environment's own metrics pooled over the windows
        (the reservoir: reliability, resilience, vulnerability, deficit and energy per window).
    :ivar per_window: per copy, per metric, each window's value.
    """

    rewards: torch.Tensor
    performance: list[dict[str, float]]
    per_window: list[dict[str, tuple[float, ...]]]


class HeldOutReplay(Protocol):
    """Years of a real record nobody trained on, replayed by any policy: what :meth:`EnvProfile.held_out` offers.

    :mod:`reservoir_dqn.evaluation.reoperation` scores every policy on them against the bound.
    """

    @property
    def criteria(self) -> dict[str, tuple[float, float]]:
        """The performance criteria :meth:`replay` measures, and the range each lies in."""

    @property
    def starts(self) -> tuple[str, ...]:
        """Each window's first month, ``YYYY-MM``."""

    @property
    def first_years(self) -> tuple[int, ...]:
        """Each window's first calendar year (its water years follow on)."""

    @property
    def horizon(self) -> int:
        """Steps (months) per window."""

    def policies(self) -> dict[str, TensorDictModuleBase]:
        """The reference policies replayed, by name: the bound, ``foresight``, among them."""

    def random_rewards(self) -> torch.Tensor:
        """``[W, H]`` each step's expected reward of the uniformly random policy, the anchor of 0, exactly."""

    def rewards(self, policy: TensorDictModuleBase, copies: int = 1) -> torch.Tensor:
        """``[copies, W, H]`` each step's reward of ``policy`` (``copies`` stacked agents) replaying every window."""

    def replay(self, policy: TensorDictModuleBase, copies: int = 1) -> Replayed:
        """``policy`` (``copies`` stacked agents) replaying every window: its rewards and its performance."""

    def random_performance(self) -> Replayed:
        """The uniformly random policy's performance (its rewards: the exact expectation, :meth:`random_rewards`)."""

    @property
    def period(self) -> tuple[str, str]:
        """The first and last month of the held-out period that :meth:`continuous` operates in one run."""

    def continuous(self, policy: TensorDictModuleBase | None, copies: int = 1) -> Replayed:
        """``policy`` (``copies`` stacked agents; ``None``: the uniformly random policy) operating the whole held-out
        period in one run, its state carried over: rewards ``[copies, 1, T]`` and the criteria."""

    def trajectory_rows(self, shipped: tuple[TensorDictModuleBase, int, int]) -> list[dict[str, object]]:
        """Step-by-step rows of the first window for the shipped agent (network, agents, index) and the references."""


class Advisor(Protocol):
    """One state's advice in an operator's terms: what :meth:`EnvProfile.advisor` offers (``reservoir-dqn advise``)."""

    @property
    def observation_size(self) -> int:
        """The length of the observation a policy reads."""

    def state(self, storage_hm3: float, month: str, months_left: int | None, last_inflow_hm3: float | None) -> Any:
        """The state of an operator's description; a :class:`~reservoir_dqn.config.ConfigError` names a bad value."""

    def observation(self, state: Any) -> torch.Tensor:
        """``[1, observation]`` what a policy sees in ``state``."""

    def advice(self, state: Any, q_values: torch.Tensor) -> Any:
        """A policy's greedy choice in ``state`` from its ``[actions]`` Q-values, beside the optimum's."""

    def report(self, advice: Any, storage_hm3: float, last_inflow_hm3: float | None, name: str) -> str:
        """What an operator reads of ``advice``, the policy called ``name``."""


class EnvProfile(ABC):
    """Everything environment-specific, behind one interface.

    :cvar name: ``env.name`` in params.yaml.
    :cvar section: the settings section of ``env`` it reads (``env.section`` must name it).
    :cvar settings_model: the model of that section; :func:`reservoir_dqn.envs.register`
        declares it, so params.yaml's section is validated when it loads.
    :cvar headline: the few metrics that say which experiment is better; the first is the
        champion's and the CI gate's main one.
    :cvar ranged: the other metrics of :meth:`policy_metrics` whose values are bounded (a
        share, a volume), declared with their ranges (:attr:`metrics`).
    :cvar optimum_label: what a score of 1 means, for tables and figures.
    :cvar solved_return: the return at which an episode counts as solved (Gymnasium's
        ``reward_threshold``); training records when each agent's validation first reaches it.
        ``None``: the environment has none.
    :cvar optimum_baseline: the baseline that is the optimal policy, against which each test
        scenario's regret is measured (``None``: no baseline is optimal).
    """

    name: str
    section: str
    settings_model: type[BaseModel]
    headline: tuple[Metric, ...]
    optimum_label: str
    solved_return: float | None = None
    optimum_baseline: str | None = None
    ranged: tuple[Metric, ...] = ()

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Every metric the profile declares: the headline, then :attr:`ranged`."""
        return (*self.headline, *self.ranged)

    @abstractmethod
    def make(self, config: EnvConfig, slot_seeds: Sequence[int]) -> EnvBase:
        """A batched env of ``len(slot_seeds)`` copies, copy ``i`` seeded ``slot_seeds[i]``.

        Its output carries ``observation``, a categorical ``action``, ``reward``, the three end
        flags and, from transforms, ``step_count`` and ``episode_reward``.
        """

    def check(self, config: EnvConfig) -> None:
        """Refuse, in one line (:class:`~reservoir_dqn.config.ConfigError`), settings this environment cannot run.

        Called when a stage starts, before it writes anything; most environments need no check.
        """
        return None

    def test_config(self, config: EnvConfig) -> EnvConfig:
        """The settings the test episodes run under (the training's, unless the profile says otherwise)."""
        return config

    @abstractmethod
    def episode_limit(self, config: EnvConfig) -> int:
        """The most steps an episode can last."""

    def settings(self, config: EnvConfig) -> dict[str, Any]:
        """The params that define this environment's MDP, as dotted keys (``compare`` requires both sides equal)."""
        return {"env.name": config.name}

    def observation_scale(self, config: EnvConfig) -> tuple[float, ...] | None:
        """Fixed factors the Q-network applies to raw observations (``None``: already about [-1, 1])."""
        return None

    @abstractmethod
    def baselines(self, config: EnvConfig, num_actions: int, seed: int) -> dict[str, TensorDictModuleBase]:
        """The policies a trained agent is compared with, by name (always ``random``)."""

    @abstractmethod
    def optimum_return(self, config: EnvConfig, baseline_returns: Mapping[str, float]) -> float:
        """The mean return that scores 1, given the baselines' mean returns on the same episodes."""

    @abstractmethod
    def policy_metrics(self, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
        """The environment's own metrics of one policy over a set of episodes (pooled over them)."""

    def episode_columns(self, config: EnvConfig, episodes: Episodes) -> dict[str, torch.Tensor]:
        """Per-episode totals written next to each episode's return in the episodes CSV."""
        return {}

    def action_meaning(self, config: EnvConfig, num_actions: int) -> tuple[str, torch.Tensor]:
        """What each action is, for an exported policy's output: a name and ``[A]`` values (here: the index)."""
        return "action", torch.arange(num_actions, dtype=torch.float32)

    def observation_fields(self, config: EnvConfig, size: int) -> tuple[str, ...]:
        """The observation's fields, in order, for an exported policy's description."""
        return tuple(f"observation_{index}" for index in range(size))

    def observation_bounds(self, config: EnvConfig, size: int) -> tuple[tuple[float, float], ...]:
        """Each field's ``(low, high)``, in :meth:`observation_fields`' order: where an exported policy's input may lie.

        An infinite bound bounds nothing; the default, none at all (the served model then refuses only
        values that are not finite).
        """
        return ((-math.inf, math.inf),) * size

    def grid_observations(self, config: EnvConfig) -> torch.Tensor | None:
        """``[N, observation]`` every state's observation, where the state space is finite (``None``: it is not)."""
        return None

    def exact_accounts(
        self, config: EnvConfig, q_values: Callable[[torch.Tensor], torch.Tensor], agents: int
    ) -> list[Account] | None:
        """Each stacked agent's greedy policy accounted exactly against the optimum (:mod:`.account`).

        ``None``: the environment is no finite MDP with a known optimum, and has no such account.
        """
        return None

    def state_rows(self, config: EnvConfig, account: Account) -> list[dict[str, Any]]:
        """One row per state of an exact account: the policy's action, the optimum's, visits and loss."""
        return []

    def trade_offs(
        self, config: EnvConfig, networks: Mapping[str, tuple[Callable[[torch.Tensor], torch.Tensor], int]]
    ) -> dict[str, Any] | None:
        """The exact front of the objectives the reward trades, and where each network's agents sit on it.

        :param networks: per network (``final``, ``best``), its stacked Q-values and how many agents it holds.
        :returns: ``None`` where the environment has no exact front; else what :func:`.reservoir.front.describe`
            returns, with one ``agents`` entry per network and agent (its ``model`` the network's name).
        """
        return None

    def trade_off_figure(self, config: EnvConfig, trade_offs: dict[str, Any]) -> Figure:
        """The figure of what :meth:`trade_offs` returned (only called where it returned one), its ``agents`` those
        to draw, grouped by their ``model``."""
        raise NotImplementedError(f"{type(self).__name__} has no exact front")

    # ----------------------------------------------------------------------- training

    @property
    def episode_group(self) -> MetricGroup:
        """The training-episode metrics: return, length, count, plus :meth:`episode_extras`."""
        return EPISODE

    def episode_extras(self, finished: TensorDictBase) -> dict[str, torch.Tensor]:
        """Per-episode values of episodes that just ended (``finished`` holds their last ``next`` step)."""
        return {}

    @property
    def batch_group(self) -> MetricGroup | None:
        """Per-agent metrics of every collected step, averaged over a log interval (``None``: none)."""
        return None

    def batch_sums(self, config: EnvConfig, steps: TensorDictBase) -> dict[str, torch.Tensor]:
        """Per-agent sums of :attr:`batch_group`'s quantities over ``steps`` (``[agents, steps]``)."""
        return {}

    # ----------------------------------------------------------------------- outputs

    @abstractmethod
    def trajectory_rows(self, config: EnvConfig, policy: str, episodes: Episodes, count: int) -> list[dict[str, Any]]:
        """Step-by-step rows of the first ``count`` episodes of a policy."""

    def figures(
        self, config: EnvConfig, trajectories: DataFrame, episodes: DataFrame, states: DataFrame
    ) -> dict[str, Figure]:
        """The environment's own figures, by file name, from the trajectory, per-episode and per-state CSVs."""
        return {}

    # ----------------------------------------------------------------------- operators' products

    def held_out(self, config: EnvConfig) -> HeldOutReplay | None:
        """The held-out years of a real record, for re-operation (``None``: the environment has none)."""
        return None

    def validation_years(self, config: EnvConfig) -> HeldOutReplay | None:
        """Years of a real record kept out of training for its validation (``None``: training validates on seeded
        episodes of its own environment, :mod:`reservoir_dqn.training.validation`)."""
        return None

    def advisor(self, config: EnvConfig) -> Advisor | None:
        """Advice on one state in an operator's terms (``None``: the environment offers none)."""
        return None

    # ----------------------------------------------------------------------- state

    @abstractmethod
    def get_state(self, env: EnvBase) -> dict[str, Any]:
        """Everything the env's next step depends on, to put in a checkpoint."""

    @abstractmethod
    def set_state(self, env: EnvBase, state: Mapping[str, Any]) -> bool:
        """Restore what :meth:`get_state` returned, into an env built with the same config.

        :returns: whether the state was restored; ``False`` when :meth:`get_state` could not
            capture it (the episodes in flight then restart from a reset).
        """
