"""The score every environment reports: its return between the random policy's (0) and the optimum's (1),
and the names of the measures against the optimum itself where an environment has one.

Its own module, imported by training (validation), the evaluation and the results files,
so that reading and comparing results (``compare``) needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# Per-agent metrics of an environment with an optimal baseline (regret) or an exact optimum (the exact account).
REGRET = "regret"  # the optimum's return minus the policy's on the same test scenario, averaged over scenarios
REGRET_SE = "regret_se"  # its standard error over the agent's scenarios (the pairing removes their spread)
EXACT_RETURN = "exact_return"  # the greedy policy's exact expected return (envs/account.py)
EXACT_GAP = "exact_gap"  # the optimum's exact expected return minus it
# Per-agent losses against an exact front of the reward's trade-off (envs/reservoir/front.py), in reward units: the
# MORL field's expected and maximum utility loss, each metric's key in the front's entries beside it (UTILITY_LOSSES).
UTILITY_LOSS_MEAN = "utility_loss_mean"  # the front's best utility less the policy's, averaged over weightings
UTILITY_LOSS_MAX = "utility_loss_max"  # the same loss at the weighting where it is largest
UTILITY_LOSSES = {UTILITY_LOSS_MEAN: "expected_utility_loss", UTILITY_LOSS_MAX: "maximum_utility_loss"}
EXACT_Z = "exact_z"  # (exact return - Monte Carlo test mean) / the test mean's standard error


@dataclass(frozen=True)
class Reference:
    """What a score is measured against on one set of scenarios.

    :ivar random_return: the random policy's mean return there (score 0).
    :ivar optimum_return: the optimum's mean return there (score 1).
    """

    random_return: float
    optimum_return: float

    def score(self, mean_return: float | torch.Tensor) -> float | torch.Tensor:
        """``(R - R_random) / (R_optimum - R_random)``: cannot invert when returns are negative."""
        return (mean_return - self.random_return) / (self.optimum_return - self.random_return)
