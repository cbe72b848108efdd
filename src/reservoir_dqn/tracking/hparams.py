"""TensorBoard's HPARAMS tab: each pipeline execution's hyperparameters beside its test results.

The evaluate stage writes one hparams session into the run's TensorBoard folder (the one
holding ``seed-<k>``): the training hyperparameters (every ``dqn`` and ``train`` key, the
environment and the seed) and the headline metrics of the final networks, mean and interval.
"""

from __future__ import annotations

from pathlib import Path

from reservoir_dqn.config import Config
from reservoir_dqn.results import Evaluation

HPARAM_SECTIONS = ("seed", "env.name", "env.num_envs", "dqn.", "train.")


def hparams(config: Config) -> dict[str, float | int | str | bool]:
    """The hyperparameters TensorBoard compares runs by (lists as text)."""
    values: dict[str, float | int | str | bool] = {}
    for key, value in config.flat().items():
        if key.startswith(HPARAM_SECTIONS):
            values[key] = value if isinstance(value, (float, int, str, bool)) else str(value)
    return values


def log_hparams(folder: Path, config: Config, evaluation: Evaluation) -> None:
    """Write the hparams session of one pipeline execution into its TensorBoard folder."""
    from torch.utils.tensorboard import SummaryWriter

    metrics: dict[str, float] = {}
    for name in evaluation.headline:
        summary = evaluation.metric(name)
        metrics[f"test/{name}_mean"] = summary.mean
        if summary.ci_low is not None and summary.ci_high is not None:
            metrics[f"test/{name}_ci_low"], metrics[f"test/{name}_ci_high"] = summary.ci_low, summary.ci_high
    with SummaryWriter(log_dir=str(folder)) as writer:
        writer.add_hparams(hparams(config), metrics, run_name=".")
