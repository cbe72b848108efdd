"""Every private API of another library this package uses: where, why, and the version it was checked against.

A private attribute can change or vanish in any release without notice, and the pins
(requirements.lock) are what keep these working. Before an upgrade of one of these
libraries, check each of its rows against the new version. ``tests/test_private_apis.py``
keeps this list and the code in step: each row's access is found in its file, and every
access of another object's private attribute in ``src/`` is a row here. (Outside the package,
``tools/build_torchrl_extension.py`` imports TorchRL's compiled ``torchrl._torchrl`` to test
that it loads.)
"""

from __future__ import annotations

from typing import NamedTuple


class PrivateApi(NamedTuple):
    """One private API in use."""

    library: str  # the library and the version the use was checked against
    access: str  # the text of the access, as it appears in ``module``
    module: str  # the file of this package that uses it, relative to src/reservoir_dqn/
    why: str  # what it does for us, and why no public API does it


PRIVATE_APIS: tuple[PrivateApi, ...] = (
    PrivateApi(
        "torch 2.13.0",
        "torch._foreach_lerp_",
        "agent/dqn.py",
        "the soft target and averaged-weight updates as one fused call over every parameter (what torch's own "
        "optimisers use); a Python loop of lerp_ is the public equivalent, slower, with the same results",
    ),
    PrivateApi(
        "torch 2.13.0",
        "torch._foreach_copy_",
        "agent/dqn.py",
        "the averaged weights copied from the online ones in one call when the averaging rate is 0",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "self._sources",
        "agent/dqn.py",
        "FusedSoftUpdate reads SoftUpdate's pairs of source and target parameters to fuse its per-parameter loop",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "sampler._rng",
        "training/replay.py",
        "each agent's prioritized sampler draws from that agent's generator; ReplayBuffer.set_rng sets this "
        "attribute, but there is no public setter on a bare sampler",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "sampler._empty()",
        "training/replay.py",
        "the per-agent sampler empties each agent's sum tree when the buffer is emptied (the Sampler interface's "
        "own abstract hook)",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "_multi_step._buffer",
        "agent/dqn.py",
        "the frames MultiStepTransform holds back for n-step returns are saved in checkpoints, for exact resume",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "component._storage",
        "training/checkpoints.py",
        "a restored replay buffer's memory-mapped storage is copied into memory before its temporary folder goes",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "storage._storage",
        "training/checkpoints.py",
        "the same: the storage's tensors are cloned out of the extracted archive",
    ),
    PrivateApi(
        "torchrl 0.14.1",
        "env.base_env._env",
        "envs/gym_profile.py",
        "the Gymnasium vector env inside TorchRL's GymWrapper, whose copies' state is saved for exact resume",
    ),
    PrivateApi(
        "torch 2.13.0 (torch.utils.tensorboard)",
        "writer._get_file_writer()",
        "tracking/hparams.py",
        "the HPARAMS session is written into the run's own folder; the public add_hparams writes a new "
        "timestamped sub-run instead",
    ),
    PrivateApi(
        "mlflow 3.17.2",
        "mlflow.tracking._tracking_service",
        "tracking/registry.py",
        "mlflow.pyfunc.log_model uses the fluent API's store: its module setting is put back as it was (usually "
        "unset) after logging, which mlflow.set_tracking_uri cannot do",
    ),
    PrivateApi(
        "mlflow 3.17.2",
        "tracking_settings._tracking_uri",
        "tracking/registry.py",
        "the setting itself, read before logging and put back after",
    ),
    PrivateApi(
        "mlflow 3.17.2",
        "mlflow.tracking._model_registry",
        "tracking/registry.py",
        "the same for the registry's store",
    ),
    PrivateApi(
        "mlflow 3.17.2",
        "registry_settings._registry_uri",
        "tracking/registry.py",
        "the registry's setting itself, read before logging and put back after",
    ),
)
