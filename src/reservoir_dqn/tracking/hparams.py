"""TensorBoard's HPARAMS tab: each pipeline execution's hyperparameters beside its test results.

The evaluate stage writes one hparams session into the run's TensorBoard folder (the one
holding ``seed-<k>``): the hyperparameters that shape learning (``env.name``, ``seed`` and the
``dqn`` and ``train`` keys, less the plumbing that does not change results) and the headline
metrics of the final networks, mean and 95% interval.

What the tab shows is written here rather than left to ``SummaryWriter.add_hparams``:

- TensorBoard takes the tab's columns from the experiment definition of *one* session,
  picked arbitrarily. Every session therefore writes the same definition, holding the
  metrics of every environment (:data:`~reservoir_dqn.envs.PROFILES`), so a CartPole session
  cannot hide the reservoir's reliability.
- Columns carry display names in words (``batch size``, ``reservoir: score low (95%)``),
  which wrap at spaces instead of being cut, each with its params.yaml key as description.
- TensorBoard sorts hyperparameters by name and shows the first five: each name starts with
  its rank, so the environment and the tuned hyperparameters (``tune.space``) come first.
- A session's trial is named by its run (``gamma=0.95 (gamma-095) [0c5c5041]``, the run
  folder's name), not by its path under ``runs/``, whose first part the narrow column would
  keep: the environment, which has a column of its own.
- Metric tags start with the environment (``reservoir/test/score``), so that no chart of the
  TIME SERIES tab mixes two environments (as the training curves, see :mod:`.sinks`).
- A reservoir with a held-out record adds its figures as scalars beside them
  (``reservoir-delaware/test/held_out_score``), not as columns: the tab's columns are the
  same for every session, and most environments have no record.
- The test results are scalars at the frames the tested networks trained for, where the run's
  validation curve (the mean over its agents, :mod:`.sinks`) ends, not at step 0; the CUSTOM
  SCALARS tab draws the validation score of the run and of each agent, and the test score, in
  one chart per environment (:func:`score_layout`).
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reservoir_dqn.config import Config
from reservoir_dqn.envs import PROFILES
from reservoir_dqn.evaluation.metric_names import stat_name, tensorboard_tag
from reservoir_dqn.evaluation.results import Evaluation

if TYPE_CHECKING:  # TensorBoard's modules are imported where the session is written
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

VALIDATION_GROUP = "validation"  # the training curves' group of the validation score (training.curves.VALIDATION)
HPARAM_SECTIONS = ("seed", "env.name", "env.num_envs", "dqn.", "train.")
# Settings of where and how fast a run goes, not of what it learns.
PLUMBING = frozenset(
    {
        "dqn.buffer_on_disk",
        "train.device",
        "train.torch_threads",
        "train.compile",
        "train.checkpoint_interval_frames",
        "train.keep_checkpoints",
        "train.checkpoint_buffer",
    }
)
FIRST = ("env.name",)  # then the tuned hyperparameters, then the rest in params.yaml's order
DISPLAY_NAMES = {
    "env.name": "environment",
    "env.num_envs": "envs per agent",
    "seed": "master seed",
    "train.seeds": "agents (seeds)",
    "train.total_frames": "frames per agent",
}
# The statistics of each headline metric the tab shows (final networks), and their words.
STATISTICS = {"mean": "", "ci_low": " low (95%)", "ci_high": " high (95%)"}

HParamValue = float | int | str | bool


def hparams(config: Config) -> dict[str, HParamValue]:
    """The hyperparameters TensorBoard compares runs by, by params.yaml key, in the tab's order (lists as text)."""
    flat = {
        key: value if isinstance(value, (float, int, str, bool)) else str(value)
        for key, value in config.flat().items()
        if key.startswith(HPARAM_SECTIONS) and key not in PLUMBING
    }
    first = [key for key in (*FIRST, *config.tune.space) if key in flat]
    return {key: flat[key] for key in dict.fromkeys([*first, *flat])}


def hparam_name(rank: int, key: str) -> str:
    """The name TensorBoard sorts by: the rank, then the key (``03 dqn.gamma``)."""
    return f"{rank:02d} {key}"


def display_name(key: str) -> str:
    """What the tab's column says: ``dqn.eps_decay_frames`` -> ``eps decay frames``."""
    return DISPLAY_NAMES.get(key) or key.rsplit(".", 1)[-1].replace("_", " ")


def metric_tag(env: str, name: str, statistic: str) -> str:
    """The scalar tag of a test metric: ``reservoir/test/score``, ``reservoir/test/score_lo``, ..."""
    return tensorboard_tag(env, stat_name(name, statistic))


def _metric_tags() -> list[tuple[str, str]]:
    """(tag, display name) of every environment's test metrics: the main one with its interval, then the others."""
    tags = []
    for env, env_profile in PROFILES.items():
        main, *others = [metric.name for metric in env_profile.headline]
        rows = [(main, statistic) for statistic in STATISTICS] + [(name, "mean") for name in others]
        rows += [(name, statistic) for name in others for statistic in ("ci_low", "ci_high")]
        tags += [
            (metric_tag(env, name, statistic), f"{env}: {name}{STATISTICS[statistic]}") for name, statistic in rows
        ]
    return tags


def _experiment(values: dict[str, HParamValue]) -> list[api_pb2.HParamInfo | api_pb2.MetricInfo]:
    from tensorboard.plugins.hparams import api_pb2

    def data_type(value: HParamValue) -> int:
        if isinstance(value, bool):
            return int(api_pb2.DATA_TYPE_BOOL)
        return int(api_pb2.DATA_TYPE_FLOAT64 if isinstance(value, (int, float)) else api_pb2.DATA_TYPE_STRING)

    infos: list[api_pb2.HParamInfo | api_pb2.MetricInfo] = [
        api_pb2.HParamInfo(
            name=hparam_name(rank, key),
            display_name=display_name(key),
            description=f"params.yaml {key}",
            type=data_type(value),
        )
        for rank, (key, value) in enumerate(values.items())
    ]
    infos += [
        api_pb2.MetricInfo(name=api_pb2.MetricName(tag=tag), display_name=name, description=tag)
        for tag, name in _metric_tags()
    ]
    return infos


def _summary(tag: str, data: plugin_data_pb2.HParamsPluginData) -> summary_pb2.Summary:
    """One hparams-plugin summary (what TensorBoard's ``hparams.summary`` makes, which needs TensorFlow)."""
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.hparams import metadata

    summary = summary_pb2.Summary()
    summary.value.add(tag=tag, metadata=metadata.create_summary_metadata(data), tensor=metadata.NULL_TENSOR)
    return summary


def _session(values: dict[str, HParamValue], trial: str) -> list[summary_pb2.Summary]:
    """The experiment definition (the same in every session), this session's start (as ``trial``) and its end."""
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    infos = _experiment(values)
    experiment = api_pb2.Experiment(
        hparam_infos=[info for info in infos if isinstance(info, api_pb2.HParamInfo)],
        metric_infos=[info for info in infos if isinstance(info, api_pb2.MetricInfo)],
    )
    now = time.time()
    start = plugin_data_pb2.SessionStartInfo(start_time_secs=now, group_name=trial)
    for rank, (key, value) in enumerate(values.items()):
        slot = start.hparams[hparam_name(rank, key)]
        if isinstance(value, bool):
            slot.bool_value = value
        elif isinstance(value, (int, float)):
            slot.number_value = value
        else:
            slot.string_value = value
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=now)
    return [
        _summary(metadata.EXPERIMENT_TAG, plugin_data_pb2.HParamsPluginData(experiment=experiment)),
        _summary(metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
        _summary(metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end)),
    ]


def score_layout(env: str, main: str) -> dict[str, dict[str, list[object]]]:
    """The CUSTOM SCALARS tab's chart of ``env``: its validation ``main`` over frames (the run's and each agent's) and
    its test ``main`` with the interval's ends, at the frames the networks trained for."""
    validation, test = f"{env}/{VALIDATION_GROUP}/{main}", metric_tag(env, main, "mean")
    tags = [validation, test, metric_tag(env, main, "ci_low"), metric_tag(env, main, "ci_high")]
    return {env: {f"{main}: validation over frames, then test": ["Multiline", [f"^{re.escape(tag)}$" for tag in tags]]}}


def log_hparams(folder: Path, config: Config, evaluation: Evaluation, frames: int = 0) -> None:
    """Write the hparams session of one pipeline execution into its TensorBoard folder.

    :param frames: how many frames each tested network trained for: the step of the test results.
    """
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(folder)) as writer:
        for summary in _session(hparams(config), trial=folder.name):
            writer._get_file_writer().add_summary(summary)
        for name in evaluation.headline:
            metric = evaluation.metric(name)
            for statistic, value in (("mean", metric.mean), ("ci_low", metric.ci_low), ("ci_high", metric.ci_high)):
                if value is not None:
                    writer.add_scalar(metric_tag(evaluation.env, name, statistic), value, global_step=frames)
        if evaluation.held_out is not None:  # scalars beside the test metrics; the tab's columns are every env's
            for name, value in evaluation.held_out.metrics().items():
                writer.add_scalar(tensorboard_tag(evaluation.env, name), value, global_step=frames)
        writer.add_custom_scalars(score_layout(evaluation.env, evaluation.headline[0]))
