"""``reservoir-dqn promote``: offer the committed run's registered version the ``champion`` alias.

Run it on a committed revision (CI runs it on main after the results are committed), or
right after ``make run`` on one: the version offered is the one of the run whose
``metrics/train.json`` and ``metrics/eval.json`` the commit holds, or that the pipeline
reproduced from the commit. A workspace qualifies when its only changes are the pipeline's
own outputs and ``dvc.lock`` (each run has new MLflow run ids and times, so a fresh clone's
``make run`` always changes them), ``dvc status`` finds every output to be what dvc.lock
records, and every file the pipeline reads is committed: the model is then reproducible from
the commit, and the alias's history says that its results were not committed. So a queued
or ``--temp`` experiment that was never applied never takes the alias, nor does a workspace
whose params or code differ from the commit; otherwise the command refuses in one line.
The rule that moves the alias, and the record of each move, are
:mod:`reservoir_dqn.tracking.champion`'s.

- ``reservoir-dqn promote``: the committed version moves in only when it is significantly better.
- ``reservoir-dqn promote --force``: it moves in without the comparison (recorded as forced),
  e.g. when the evaluation changed on purpose and no earlier score compares.
- ``reservoir-dqn promote --back``: the alias goes back to the version that held it before.

Exit statuses (the one table, :mod:`reservoir_dqn.commands.exits`): 0 when it decided (moved or not),
3 when it cannot judge (evaluated under other conditions, too few seeds), 2 for work that is
not committed or bad options, 4 when the store or the run's version cannot be found.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from reservoir_dqn.commands.dvc_files import LOCK, Pipeline, changed_files, dvc_status, tracked_files, visible
from reservoir_dqn.commands.exits import Exit
from reservoir_dqn.commands.plumbing import StageFailed, connect_tracking, run_stage
from reservoir_dqn.commands.stage import training_summary
from reservoir_dqn.commands.workspace import git
from reservoir_dqn.common.files import read_json
from reservoir_dqn.common.process import exit_process
from reservoir_dqn.config import Config, add_config_arguments, config_from_args, flatten, read_params
from reservoir_dqn.evaluation.results import Evaluation
from reservoir_dqn.tracking.backends import BACKENDS
from reservoir_dqn.tracking.champion import ChampionRegistry, decide

log = logging.getLogger(__name__)


def committed_commit(paths: Sequence[Path]) -> str:
    """The commit HEAD when every one of ``paths`` is tracked and unchanged from it; else refuse in one line."""
    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    if head is None or head.returncode != 0:
        raise StageFailed("promote runs on a committed revision, and this folder has no git commit", Exit.BAD_INPUT)
    for path in paths:
        listed = git("ls-files", "--error-unmatch", "--", str(path))
        if listed is None or listed.returncode != 0:
            raise StageFailed(
                f"{path} is not committed: promote runs on committed work (commit it first)", Exit.BAD_INPUT
            )
    status = git("status", "--porcelain", "--", *(str(path) for path in paths))
    if status is None or status.returncode != 0:
        raise StageFailed("git status failed: cannot tell whether the results are committed", Exit.BAD_INPUT)
    dirty = [line[3:] for line in status.stdout.split("\n") if line.strip()]
    if dirty:
        raise StageFailed(
            f"{', '.join(dirty)} {'differs' if len(dirty) == 1 else 'differ'} from the last commit: promote runs on "
            "committed work "
            "(commit the results, or `git checkout` them)",
            Exit.BAD_INPUT,
        )
    return head.stdout.strip()


REPRODUCED = "results reproduced from the commit, not committed"  # what the alias's history says of such a move


def reproduced_commit(config: Config) -> str:
    """HEAD, when the workspace's results are the pipeline's outputs of HEAD's code and params; else refuse in one line.

    Only the pipeline's outputs and dvc.lock may differ from HEAD; ``dvc status`` must find every output to be what
    dvc.lock records, and each file the pipeline reads from outside must be committed.
    """
    root = Path.cwd()
    head = git("rev-parse", "--verify", "--quiet", "HEAD")
    changed = changed_files(root)
    if head is None or head.returncode != 0 or changed is None:
        raise StageFailed("promote runs on a committed revision, and git cannot tell which one this is", Exit.BAD_INPUT)
    pipeline = Pipeline.read(root, flatten(read_params(config.source)))
    others = [path for path in changed if not pipeline.writes(path)]
    if others:
        raise StageFailed(
            f"{', '.join(others)} {'differs' if len(others) == 1 else 'differ'} from the last commit: promote runs on "
            "committed code and params (commit them, or `git checkout` them)",
            Exit.BAD_INPUT,
        )
    tracked = tracked_files(root) or set()
    uncommitted = [dependency.path for dependency in pipeline.dependencies if not visible(dependency.path, tracked)]
    if uncommitted:
        raise StageFailed(
            f"{', '.join(uncommitted)}, which the pipeline reads, {'is' if len(uncommitted) == 1 else 'are'} not "
            "committed: promote runs on results reproducible from a commit (commit it)",
            Exit.BAD_INPUT,
        )
    stale = dvc_status(sys.executable, root)
    if stale is None:
        raise StageFailed("dvc status failed: cannot tell whether the outputs are the pipeline's", Exit.BAD_INPUT)
    if stale:
        raise StageFailed(
            f"the outputs of {', '.join(stale)} are not what {LOCK} records (`dvc status`): run "
            "`reservoir-dqn dvc repro`, then promote",
            Exit.BAD_INPUT,
        )
    return head.stdout.strip()


def promoted_commit(config: Config) -> tuple[str, bool]:
    """The commit whose results promote offers, and whether they are only reproduced from it (not committed)."""
    paths = [config.source, Path(config.paths.train_metrics), Path(config.paths.eval_metrics)]
    if not Path(LOCK).exists():  # stages run by hand: only committed results tell which run is whose
        return committed_commit(paths), False
    try:
        return committed_commit([*paths, Path(LOCK)]), False
    except StageFailed:
        commit = reproduced_commit(config)
    log.info(f"the results are not committed; they are the pipeline's outputs of {commit[:10]} (`git commit` them)")
    return commit, True


def run(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn promote", description="Offer the committed run's model version the 'champion' alias."
    )
    add_config_arguments(parser)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--force", action="store_true", help="move the alias without the comparison (recorded)")
    action.add_argument("--back", action="store_true", help="give the alias back to its previous holder")
    args = parser.parse_args(argv)
    config: Config = config_from_args(args)
    if not (config.tracking.enabled and config.tracking.register_model):
        raise StageFailed("tracking.enabled and tracking.register_model must be on to promote a model", Exit.BAD_INPUT)
    if not BACKENDS.get(config.tracking.backend).has_registry:
        with_registry = " or ".join(name for name in BACKENDS.names() if BACKENDS.get(name).has_registry)
        raise StageFailed(
            f"tracking.backend: {config.tracking.backend} has no model registry; promote needs {with_registry}",
            Exit.BAD_INPUT,
        )
    paths = config.paths
    commit, reproduced = promoted_commit(config)
    tracking = connect_tracking(config)
    assert tracking.store is not None  # tracking is enabled
    registry = ChampionRegistry.of(tracking.store, config.env.name)
    try:
        if args.back:
            print(registry.move_back(commit))
            return Exit.OK
        version = registry.version_of_run(_committed_run(config))
    except LookupError as error:
        raise StageFailed(str(error), Exit.BAD_INPUT if args.back else Exit.FAILED) from None
    evaluation = Evaluation.from_json(read_json(Path(paths.eval_metrics)))
    registry.record_candidate(version, evaluation.shipped_scores(), evaluation.conditions)
    candidate = registry.evidence(version)
    kept = f"; {REPRODUCED}" if reproduced else ""  # the alias's history says how the results were kept
    if args.force:
        print(registry.move(version, f"forced (reservoir-dqn promote --force){kept}", commit))
        return Exit.OK
    budget = config.tracking.champion_budget.get(config.env.name)
    decision = decide(
        candidate,
        registry.holder(),
        None if budget is None else (budget.total_frames, budget.seeds),
        config.compare.significance,
    )
    if decision.move:
        registry.move(version, decision.verdict + kept, commit)
    print(f"{registry.name}: {decision.reason}")
    return Exit.OK if decision.comparable else Exit.CANNOT_JUDGE


def _committed_run(config: Config) -> str:
    """The MLflow run that wrote the committed ``train.json``."""
    parent = training_summary(config).run_ids.get("parent")
    if not parent:
        raise StageFailed(f"{config.paths.train_metrics} names no MLflow run: it was trained with tracking off")
    return parent


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)


if __name__ == "__main__":
    exit_process(main())
