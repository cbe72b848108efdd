"""Seeded greedy episodes: every policy, and every agent, on the same scenarios.

Episode ``i`` of an evaluation seeded ``s`` runs in an environment copy seeded ``s + i``,
whichever policy or agent plays it, so all of them face the same inflows (or initial
states). N agents are evaluated together in one batched environment of ``N x episodes``
copies, laid out agent-major like everything else.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.checkpoint import GlobalRNGState
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs import EnvProfile, Episodes
from reservoir_dqn.scoring import EXACT_GAP, EXACT_RETURN, EXACT_Z, REGRET, REGRET_SE, Reference

if TYPE_CHECKING:
    from reservoir_dqn.envs.account import Account


def run_episodes(
    profile: EnvProfile,
    config: EnvConfig,
    policy: TensorDictModuleBase,
    slot_seeds: Sequence[int],
    prepare: Callable[[EnvBase], None] | None = None,
) -> Episodes:
    """Run ``policy`` greedily (exploration off) for one episode in each copy, copy ``i`` seeded ``slot_seeds[i]``.

    Leaves every global random generator as it found it, so an evaluation in the middle of
    training changes nothing of the training.

    :param prepare: called on the environment before its first reset (the reservoir's
        re-operation sets the record's windows there).
    """
    rng = GlobalRNGState()
    saved = rng.state_dict()
    env = profile.make(config, slot_seeds)
    if prepare is not None:
        prepare(env)
    try:
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            steps = _first_episodes(env, policy, profile.episode_limit(config))
    finally:
        env.close()
        rng.load_state_dict(saved)
    done = steps["next", "done"].squeeze(-1)
    # A step is valid until (and including) the first done flag of its environment.
    valid = (done.long().cumsum(dim=1) - done.long()) == 0
    steps.set("valid", valid)
    last = done.float().argmax(dim=1)
    rows = torch.arange(len(slot_seeds))
    returns = steps["next", "episode_reward"].squeeze(-1)[rows, last]
    lengths = steps["next", "step_count"].squeeze(-1)[rows, last]
    return Episodes(steps=steps, returns=returns, lengths=lengths)


def _first_episodes(env: EnvBase, policy: TensorDictModuleBase, limit: int) -> TensorDictBase:
    """Step every copy (resetting those that finish) until each has finished one episode: ``[N, T]`` steps.

    ``env.rollout(limit, policy, break_when_any_done=False)`` computes the same steps but
    always runs ``limit`` of them, long after short episodes ended (CartPole's random
    policy falls within about 20 of its 500); its ``break_when_all_done`` needs partial
    steps, which gymnasium's vector env refuses.
    """
    tensordict = env.reset()
    steps = []
    finished = torch.zeros(env.batch_size, dtype=torch.bool, device=env.device)
    for _ in range(limit):
        tensordict.update(policy(tensordict))
        step, tensordict = env.step_and_maybe_reset(tensordict)
        steps.append(step)
        finished |= step["next", "done"].reshape(env.batch_size)
        if bool(finished.all()):
            return torch.stack(steps, dim=1)
    raise RuntimeError("an evaluation episode did not end within the episode limit")


def run_agents(
    profile: EnvProfile, config: EnvConfig, q_network: TensorDictModuleBase, agents: int, episodes: int, seed: int
) -> list[Episodes]:
    """Each of the ``agents`` stacked networks plays ``episodes`` episodes seeded ``seed, seed + 1, ...``."""
    everyone = run_episodes(
        profile, config, q_network, [seed + index for _ in range(agents) for index in range(episodes)]
    )
    return [everyone.part(agent * episodes, (agent + 1) * episodes) for agent in range(agents)]


def describe(profile: EnvProfile, config: EnvConfig, episodes: Episodes) -> dict[str, float]:
    """Return statistics and the environment's own metrics of one policy's episodes."""
    returns = episodes.returns.double()
    return {
        "return": float(returns.mean()),
        "return_std": float(returns.std(unbiased=False)),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "length": float(episodes.lengths.double().mean()),
        **profile.policy_metrics(config, episodes),
    }


def paired_regret(episodes: Episodes, optimum: Episodes) -> dict[str, float]:
    """The optimum's return minus the policy's, scenario by scenario (same seeds), averaged, with its standard error.

    The scenarios' own spread (a dry decade against a wet one) is common to both returns and
    cancels in each difference, so the regret's error is a fraction of the returns'.
    """
    difference = optimum.returns.double() - episodes.returns.double()
    return {REGRET: float(difference.mean()), REGRET_SE: _standard_error(difference)}


def exact_metrics(account: Account, episodes: Episodes) -> dict[str, float]:
    """The exact expected return of an agent's greedy policy, its gap to the optimum, and how many standard
    errors of the Monte Carlo test mean (``episodes``) it is from that mean.

    The standard error is floored at a millionth of the mean's magnitude (the episodes' returns are
    float32 sums), so that episodes that all return the same give a finite ``exact_z``.
    """
    returns = episodes.returns.double()
    mean = float(returns.mean())
    error = max(_standard_error(returns), 1e-6 * max(1.0, abs(mean)))
    return {
        EXACT_RETURN: account.policy_return,
        EXACT_GAP: account.gap,
        EXACT_Z: (account.policy_return - mean) / error,
    }


def _standard_error(values: torch.Tensor) -> float:
    """The standard error of the mean of ``values`` (0 for a single value)."""
    return float(values.std() / math.sqrt(len(values))) if len(values) > 1 else 0.0


def reference(
    profile: EnvProfile, config: EnvConfig, num_actions: int, episodes: int, seed: int
) -> tuple[Reference, dict[str, Episodes]]:
    """Run the baselines on ``episodes`` scenarios seeded from ``seed``; the score's reference and their episodes."""
    played = {
        name: run_episodes(profile, config, policy, [seed + index for index in range(episodes)])
        for name, policy in profile.baselines(config, num_actions, seed).items()
    }
    means = {name: float(result.returns.double().mean()) for name, result in played.items()}
    return Reference(means["random"], profile.optimum_return(config, means)), played
