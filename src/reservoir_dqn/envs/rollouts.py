"""Playing a policy in an environment: one greedy episode in each seeded copy, as :class:`~.profile.Episodes`.

Evaluation, validation, the ONNX check and the held-out record's re-operation all play
episodes through :func:`run_episodes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.checkpoint import GlobalRNGState
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from reservoir_dqn.config import EnvConfig
from reservoir_dqn.envs.profile import EnvProfile, Episodes


def run_episodes(
    profile: EnvProfile,
    config: EnvConfig,
    policy: TensorDictModuleBase,
    slot_seeds: Sequence[int],
    prepare: Callable[[EnvBase], None] | None = None,
    steps: int | None = None,
    env: EnvBase | None = None,
) -> Episodes:
    """Run ``policy`` greedily (exploration off) for one episode in each copy, copy ``i`` seeded ``slot_seeds[i]``.

    Leaves every global random generator as it found it, so an evaluation in the middle of
    training changes nothing of the training.

    :param prepare: called on the environment before the episodes' reset (the reservoir's
        re-operation sets the record's windows there).
    :param steps: play only the first ``steps`` steps of each episode (the reservoir's continuous replay plays
        a year of each).
    :param env: an environment of ``len(slot_seeds)`` copies to play in, and leave open, instead of a new one
        seeded ``slot_seeds`` (which then only count the copies). Its episodes continue its generators from
        earlier calls, so only a ``prepare`` that decides each episode whole (a replayed window) repeats what a
        new environment would play: the continuous replay plays its years one after the other in one
        environment (a TorchRL environment's specs cost more to build than a year of steps).
    """
    rng = GlobalRNGState()
    saved = rng.state_dict()
    played_in = profile.make(config, slot_seeds) if env is None else env
    try:
        if prepare is not None:
            prepare(played_in)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            played = _first_episodes(played_in, policy, profile.episode_limit(config), steps)
    finally:
        if env is None:
            played_in.close()
        rng.load_state_dict(saved)
    done = played["next", "done"].squeeze(-1).clone()
    # A step is valid until (and including) the first done flag of its environment (or the last step played).
    done[:, -1] |= steps is not None
    valid = (done.long().cumsum(dim=1) - done.long()) == 0
    played.set("valid", valid)
    last = done.float().argmax(dim=1)
    rows = torch.arange(len(slot_seeds))
    returns = played["next", "episode_reward"].squeeze(-1)[rows, last]
    lengths = played["next", "step_count"].squeeze(-1)[rows, last]
    return Episodes(steps=played, returns=returns, lengths=lengths)


def _first_episodes(env: EnvBase, policy: TensorDictModuleBase, limit: int, steps: int | None = None) -> TensorDictBase:
    """Step every copy (resetting those that finish) until each has finished one episode: ``[N, T]`` steps
    (with ``steps``: exactly that many).

    ``env.rollout(limit, policy, break_when_any_done=False)`` computes the same steps but
    always runs ``limit`` of them, long after short episodes ended (CartPole's random
    policy falls within about 20 of its 500); its ``break_when_all_done`` needs partial
    steps, which gymnasium's vector env refuses.
    """
    tensordict = env.reset()
    played = []
    finished = torch.zeros(env.batch_size, dtype=torch.bool, device=env.device)
    for _ in range(steps or limit):
        tensordict.update(policy(tensordict))
        step, tensordict = env.step_and_maybe_reset(tensordict)
        played.append(step)
        finished |= step["next", "done"].reshape(env.batch_size)
        if steps is None and bool(finished.all()):
            break
    else:
        if steps is None:
            raise RuntimeError("an evaluation episode did not end within the episode limit")
    return torch.stack(played, dim=1)
