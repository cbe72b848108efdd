"""``DiscreteReservoirEnv``: monthly operation of a multipurpose reservoir, as an exact finite MDP.

The physics live in :class:`~reservoir_dqn.envs.reservoir.model.ReservoirModel`, shared by
this batched TorchRL environment and the stochastic dynamic programming solver
(:mod:`reservoir_dqn.envs.reservoir.sdp`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from reservoir_dqn.envs.reservoir.model import INFO_KEYS, Outcome, ReservoirModel
from reservoir_dqn.envs.reservoir.records import MONTHS
from reservoir_dqn.envs.reservoir.sdp import end_value_of
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.envs.reservoir.windows import Windows


class DiscreteReservoirEnv(EnvBase):
    """Monthly release decisions for ``N`` independent reservoirs, stepped together.

    A reservoir stores water in whole volume units (``unit_hm3`` hm3 each) between 0 and
    ``capacity``. Every month the operator picks a release target; the inflow of that
    month arrives; water above capacity spills. Turbined release makes hydropower, release
    serves a downstream water-supply demand, spill is a flood risk and storage below the
    minimum operating level is a violation. All parameters come from the ``env.reservoir``
    section of params.yaml.

    ## Action Space

    ``Categorical(A)``: index into ``release_levels`` (default 11 targets, 0 to 20 units
    per month). The actual release is the target cut to the water available
    (storage + inflow); storage can therefore never go negative.

    ## Observation Space

    ``observation`` is a float32 vector of shape ``(4,)``: ``(3,)`` when ``observe_time_left``
    is off, one more with a persistent inflow model (``inflow_model: record``), and one more
    with ``observe_last_flow``:

    | Num | Observation                                    | Min  | Max |
    |-----|------------------------------------------------|------|-----|
    | 0   | storage / capacity (start of month)            | 0    | 1   |
    | 1   | sin(2 pi month / 12)                           | -1   | 1   |
    | 2   | cos(2 pi month / 12)                           | -1   | 1   |
    | 3   | months left / horizon_months                   | 0    | 1   |
    | 4   | last month's inflow class k as (k + 1/2) / K   | 0    | 1   |
    | 5   | last month's inflow as its quantile, 2 Phi(z) - 1 | -1 | 1   |

    The months left make the observation the SDP's own state (time step, storage): without
    them the best policy the agent can represent is stationary in the month, and it cannot
    draw the reservoir down before the horizon as the optimum does. With a persistent inflow,
    the SDP's state also holds the class of the inflow the operator has just seen; it enters
    as the class's middle quantile, so that "a dry month for its season" reads the same in
    every season and on every river. ``observe_last_flow`` adds the flow itself (row 5): its
    quantile among that calendar month's fitting-year flows under a lognormal fit. On record
    windows, bootstrap episodes and the held-out replay it is the real month's; on chain
    episodes the class's value, so there (and in the exact account, which enumerates the
    chain's states) the observation is still a function of the SDP's state.

    The output also carries, per reservoir, the month's physical quantities and reward
    components, the episode's running counts of months with a supply shortfall and with
    a storage violation (see ``INFO_KEYS``), ``month`` (0 = January), ``time_step`` and
    ``inflow_class`` (the class of last month's inflow; 0 at the start of an independent one).

    ## Transition (one month, month ``m``, storage ``s``, inflow ``q``, target ``u``)

    - release ``r = min(u, s + q)``
    - spill ``= max(0, s + q - r - capacity)``; next storage ``s' = s + q - r - spill``
      (mass balance: ``s' = s + q - r - spill`` and ``0 <= s' <= capacity``)
    - turbined ``= min(r, turbine_capacity)``; head ``h`` is linear in storage from
      ``head_min_m`` (empty) to ``head_max_m`` (full), taken at ``(s + s') / 2``
    - energy [GWh] ``= 9810 N/m3 * h * turbined [m3] * efficiency / 3.6e12``
    - deficit ``= max(0, demand[m] - r)``; violation ``= max(0, min_storage - s')``

    ## Inflow

    ``inflow_model: lognormal``: month ``m``'s inflow is lognormal with median
    ``inflow_median[m]`` and coefficient of variation ``inflow_cv[m]``, discretised into
    ``inflow_classes`` equiprobable classes represented by their conditional means (whole
    units). Draws are independent across months and years.

    ``inflow_model: record``: a periodic Markov chain fitted to a river's record
    (:mod:`~reservoir_dqn.envs.reservoir.inflows`): month ``m``'s class is drawn from row ``j`` of
    ``transitions[m - 1]``, ``j`` being the previous month's class; the class of the month
    before the first is drawn from that month's class frequencies.

    ``scenarios: record`` (with ``inflow_model: record``): each episode is instead a window of
    the fitting years' actual record, drawn uniformly (:mod:`~reservoir_dqn.envs.reservoir.windows`;
    inflows rounded to whole units, classes read from the real flows). ``scenarios: bootstrap``:
    blocks of ``bootstrap_block_years`` consecutive fitting water years, drawn with replacement
    and joined; ``scenarios: mixture``: each episode a chain draw with probability
    ``mixture_chain_share``, else a bootstrap one. :meth:`replay` makes
    slot ``i`` play a given window ``i`` (the held-out record's re-operation).

    Each reservoir slot has its own generator: slot ``i`` of an environment seeded ``s``
    draws what a single environment seeded ``s + i`` draws. An episode's inflow sequence is
    drawn at reset, so it does not depend on the actions.

    ## Rewards

    ``reward = weight_energy * energy - weight_deficit * deficit - weight_spill * spill
    - weight_violation * violation``; each weighted term is reported separately
    (``reward_energy``, ``reward_deficit``, ``reward_spill``, ``reward_violation``).

    ## Starting State

    Storage ``initial_storage``, month ``start_month``, time step 0.

    ## Episode End

    The reservoir never fails; an episode ends after ``horizon_months`` steps (default 120,
    ten years). With ``observe_time_left`` (the default) that end is a termination: the
    time is part of the state and the MDP ends there, exactly as the SDP's ``V_H = 0``
    says, so no value is bootstrapped beyond it. Without it the observation cannot tell
    the last month from any other, so the end is a truncation (Pardo et al., 2018, "Time
    Limits in Reinforcement Learning").

    ## Seeding and state

    Each reservoir slot has its own generator. ``set_seed(s)`` seeds slot ``i`` with
    ``s + i``; :meth:`seed_slots` gives each slot an explicit seed (several agents then
    face the same scenarios). :meth:`get_state`/:meth:`set_state` carry the whole
    state (storage, time step, the episode's inflows and their classes, running counts,
    every generator), so
    a checkpoint resumes an episode where it was.

    ## Arguments

    :param config: the ``env.reservoir`` parameters.
    :param num_envs: number of reservoirs stepped together (the batch size).
    :param device: torch device of the outputs.
    """

    def __init__(self, config: ReservoirConfig, num_envs: int = 1, device: torch.device | str = "cpu") -> None:
        super().__init__(batch_size=torch.Size([num_envs]), device=device)
        self.model = ReservoirModel.from_config(config)
        self.num_envs = num_envs
        self._storage = torch.full((num_envs,), float(config.initial_storage), dtype=torch.float64)
        self._time_step = torch.zeros(num_envs, dtype=torch.long)
        self._inflows = torch.zeros(num_envs, config.horizon_months, dtype=torch.float64)
        # Column t: the class of the inflow before step t (column 0: the month before the episode).
        self._classes = torch.zeros(num_envs, config.horizon_months + 1, dtype=torch.long)
        self._before = torch.zeros(num_envs, dtype=torch.float64)  # the inflow of the month before the episode
        self._deficit_months = torch.zeros(num_envs, dtype=torch.float64)
        self._violation_months = torch.zeros(num_envs, dtype=torch.float64)
        self._generators = [np.random.default_rng(index) for index in range(num_envs)]
        self._replayed: Windows | None = None
        self._make_specs()

    def _make_specs(self) -> None:
        shape = self.batch_size
        info = {key: Unbounded(shape=shape, dtype=torch.float32) for key in self.model.info_keys}
        self.observation_spec = Composite(
            observation=Bounded(low=-1.0, high=1.0, shape=(*shape, self.model.observation_size), dtype=torch.float32),
            month=Bounded(low=0, high=MONTHS - 1, shape=shape, dtype=torch.int64),
            time_step=Bounded(low=0, high=self.model.config.horizon_months, shape=shape, dtype=torch.int64),
            inflow_class=Bounded(low=0, high=self.model.chain.classes - 1, shape=shape, dtype=torch.int64),
            **info,
            shape=shape,
        )
        self.action_spec = Categorical(self.model.num_actions, shape=shape)
        self.reward_spec = Unbounded(shape=(*shape, 1), dtype=torch.float32)
        self.full_done_spec = Composite(
            done=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            terminated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            truncated=Categorical(2, shape=(*shape, 1), dtype=torch.bool),
            shape=shape,
        )

    def _set_seed(self, seed: int | None) -> None:
        base = 0 if seed is None else int(seed)
        self.seed_slots([base + index for index in range(self.num_envs)])

    def seed_slots(self, seeds: Sequence[int]) -> None:
        """Give slot ``i`` the generator of seed ``seeds[i]`` (what a single env seeded ``seeds[i]`` has)."""
        if len(seeds) != self.num_envs:
            raise ValueError(f"{len(seeds)} seeds for {self.num_envs} reservoirs")
        self._generators = [np.random.default_rng(int(seed)) for seed in seeds]

    def get_state(self) -> dict[str, object]:
        """Everything the next step depends on: physical state, the episode's inflows and every generator."""
        return {
            "storage": self._storage.clone(),
            "time_step": self._time_step.clone(),
            "inflows": self._inflows.clone(),
            "classes": self._classes.clone(),
            "before": self._before.clone(),
            "deficit_months": self._deficit_months.clone(),
            "violation_months": self._violation_months.clone(),
            "generators": [generator.bit_generator.state for generator in self._generators],
        }

    def set_state(self, state: dict[str, object]) -> None:
        """Restore what :meth:`get_state` returned."""
        for name in ("storage", "time_step", "inflows", "classes", "deficit_months", "violation_months"):
            value = state[name]
            assert isinstance(value, torch.Tensor)
            setattr(self, f"_{name}", value.clone())
        before = state.get("before")  # checkpoints older than observe_last_flow have none: the class's value
        self._before = before.clone() if isinstance(before, torch.Tensor) else self._class_value(self._classes[:, 0])
        states = state["generators"]
        assert isinstance(states, list) and len(states) == self.num_envs
        for generator, generator_state in zip(self._generators, states, strict=True):
            generator.bit_generator.state = generator_state

    def replay(self, windows: Windows) -> None:
        """From the next reset on, slot ``i`` plays window ``i`` of the record, whatever its generator (from the
        window's own start storage, where it has one)."""
        if len(windows) != self.num_envs:
            raise ValueError(f"{len(windows)} windows for {self.num_envs} reservoirs")
        self._replayed = windows

    def _draw_episodes(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A whole episode for each slot being reset: ``[len(slots), H + 1]`` classes, ``[len(slots), H]`` inflows
        and ``[len(slots)]`` the inflow of the month before.

        Column 0 of the classes is the month before the episode, column ``t + 1`` the inflow of step ``t``.
        """
        windows = self._replayed if self._replayed is not None else self.model.training_windows
        if windows is not None:
            chosen = slots
            if self._replayed is None:  # a training window, drawn uniformly by the slot's generator
                draws = [self._generators[int(slot)].random() for slot in slots]
                chosen = torch.tensor([min(int(u * len(windows)), len(windows) - 1) for u in draws], dtype=torch.long)
            return windows.classes[chosen], windows.inflows[chosen], windows.before[chosen]
        if self.model.water_years is not None:  # bootstrap, or a mixture of it and the chain
            return self._draw_bootstrap(slots)
        return self._draw_chain(slots)

    def _draw_chain(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        classes = draw_classes(self.model, len(slots), [self._generators[int(slot)] for slot in slots])
        months = self.model.month(torch.arange(self.model.config.horizon_months)).expand(len(slots), -1)
        return classes, self.model.inflow_values[months, classes[:, 1:]], self._class_value(classes[:, 0])

    def _class_value(self, classes: torch.Tensor) -> torch.Tensor:
        """The inflow of each class of the month before the episode (where no real flow is known)."""
        return self.model.inflow_values[self.model.month(torch.tensor(-1)), classes]

    def _draw_bootstrap(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each slot's episode from the bootstrap of water years, or (``scenarios: mixture``, with probability
        ``mixture_chain_share``, one uniform of the slot's generator first) from the chain."""
        config, years = self.model.config, self.model.water_years
        assert years is not None
        classes = torch.zeros(len(slots), config.horizon_months + 1, dtype=torch.long)
        inflows = torch.zeros(len(slots), config.horizon_months, dtype=torch.float64)
        before = torch.zeros(len(slots), dtype=torch.float64)
        for row, slot in enumerate(slots.tolist()):
            generator = self._generators[slot]
            if config.scenarios == "mixture" and generator.random() < config.mixture_chain_share:
                drawn = self._draw_chain(torch.tensor([slot]))
                classes[row], inflows[row], before[row] = drawn[0][0], drawn[1][0], drawn[2][0]
            else:
                classes[row], inflows[row], before[row] = years.draw(generator, config.horizon_months)
        return classes, inflows, before

    def _observation(self, inflow_class: torch.Tensor) -> torch.Tensor:
        last_inflow = self._last_inflow() if self.model.config.observe_last_flow else None
        return self.model.observation(self._storage, self._time_step, inflow_class, last_inflow)

    def _last_inflow(self) -> torch.Tensor:
        """``[N]`` the inflow each reservoir saw last, units (before the episode: the month before it)."""
        column = (self._time_step - 1).clamp(min=0, max=self.model.config.horizon_months - 1)
        seen = self._inflows.gather(1, column.unsqueeze(1)).squeeze(1)
        return torch.where(self._time_step > 0, seen, self._before)

    def _last_class(self) -> torch.Tensor:
        """``[N]`` the class of the inflow each reservoir saw last (before the episode: the month before it)."""
        column = self._time_step.clamp(max=self.model.config.horizon_months)
        return self._classes.gather(1, column.unsqueeze(1)).squeeze(1)

    def _reset(self, tensordict: TensorDictBase | None, **kwargs: object) -> TensorDictBase:
        mask = None if tensordict is None else tensordict.get("_reset", None)
        slots = torch.arange(self.num_envs) if mask is None else mask.reshape(self.num_envs).nonzero().squeeze(-1)
        if len(slots):
            replayed = self._replayed
            if replayed is not None and replayed.storages is not None:
                self._storage[slots] = replayed.storages[slots].to(self._storage.dtype)
            else:
                self._storage[slots] = float(self.model.config.initial_storage)
            self._time_step[slots] = 0
            self._classes[slots], self._inflows[slots], self._before[slots] = self._draw_episodes(slots)
            self._deficit_months[slots] = 0.0
            self._violation_months[slots] = 0.0
        zeros = torch.zeros(self.num_envs, dtype=torch.float32)
        inflow_class = self._last_class()
        info = {key: zeros.clone() for key in self.model.info_keys}
        info["storage"] = self._storage.float()
        return TensorDict(
            {
                "observation": self._observation(inflow_class),
                "month": self.model.month(self._time_step),
                "time_step": self._time_step.clone(),
                "inflow_class": inflow_class,
                **info,
                "done": torch.zeros(self.num_envs, 1, dtype=torch.bool),
                "terminated": torch.zeros(self.num_envs, 1, dtype=torch.bool),
                "truncated": torch.zeros(self.num_envs, 1, dtype=torch.bool),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").reshape(self.num_envs).long()
        horizon = self.model.config.horizon_months
        # Slots past the horizon (never seen in normal use: they are reset first) repeat their last month.
        column = self._time_step.clamp(max=horizon - 1)
        inflow = self._inflows.gather(1, column.unsqueeze(1)).squeeze(1)
        outcome = self.model.transition(self._storage, inflow, action, self.model.month(self._time_step))
        self._storage = outcome.next_storage
        self._time_step = self._time_step + 1
        self._deficit_months = self._deficit_months + (outcome.deficit > 0)
        self._violation_months = self._violation_months + (outcome.violation > 0)
        ended = (self._time_step >= horizon).unsqueeze(-1)
        inflow_class = self._last_class()
        terminated = ended if self.model.config.observe_time_left else torch.zeros_like(ended)
        reward = outcome.reward
        if "reward_end" in self.model.info_keys:  # the storage left is worth its water value (sdp.end_values)
            end = torch.where(ended.squeeze(-1), end_value_of(self.model, outcome.next_storage, inflow_class), 0.0)
            reward = reward + end
        info = {
            "storage": outcome.next_storage.float(),
            "inflow": inflow.float(),
            **{key: getattr(outcome, key).float() for key in INFO_KEYS if hasattr(Outcome, key)},
            "deficit_months": self._deficit_months.float(),
            "violation_months": self._violation_months.float(),
        } | ({"reward_end": end.float()} if "reward_end" in self.model.info_keys else {})
        return TensorDict(
            {
                "observation": self._observation(inflow_class),
                "month": self.model.month(self._time_step),
                "time_step": self._time_step.clone(),
                "inflow_class": inflow_class,
                **info,
                "reward": reward.float().unsqueeze(-1),
                "done": ended,
                "terminated": terminated,
                "truncated": ended & ~terminated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )


def draw_classes(model: ReservoirModel, count: int, generators: Sequence[np.random.Generator]) -> torch.Tensor:
    """``[count, H + 1]`` inflow classes of an episode drawn from the chain, one generator per episode.

    Column 0 is the class of the month before the episode, column ``t + 1`` that of step ``t``'s inflow.
    """
    horizon = model.config.horizon_months
    chain = model.chain
    if not chain.persistent:  # one uniform per month, read as one of K equal bands
        uniforms = np.stack([generator.random(horizon) for generator in generators])
        choice = np.minimum((uniforms * chain.classes).astype(np.int64), chain.classes - 1)
        return torch.from_numpy(np.pad(choice, ((0, 0), (1, 0))))
    draws = torch.from_numpy(np.stack([generator.random(horizon + 1) for generator in generators]))
    classes = torch.zeros(count, horizon + 1, dtype=torch.long)
    before = int(model.month(torch.tensor(-1)))
    classes[:, 0] = _inverse_cdf(chain.marginal[before].expand(count, -1), draws[:, 0])
    for t in range(horizon):
        previous_month = int(model.month(torch.tensor(t - 1)))
        rows = chain.transitions[previous_month][classes[:, t]]
        classes[:, t + 1] = _inverse_cdf(rows, draws[:, t + 1])
    return classes


def _inverse_cdf(probabilities: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """``[N]`` the class each row of ``probabilities`` (``[N, K]``) gives its uniform draw."""
    cumulative = probabilities.cumsum(dim=-1)
    drawn = torch.searchsorted(cumulative, uniforms.unsqueeze(-1).contiguous(), right=True).squeeze(-1)
    return drawn.clamp(max=probabilities.shape[-1] - 1)
