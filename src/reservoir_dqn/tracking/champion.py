"""The ``champion`` alias of each registered model: moved only on evidence, and only to committed work.

When a run is evaluated, its registered version records the evidence a later comparison
needs (:func:`record_candidate`): the headline score of each seed on the test scenarios
(the network type that is shipped), a digest of the conditions they were measured under
(eval.json's ``conditions``: the MDP's params, the scenarios, the score's reference) and
``champion_status: candidate``. Evaluation cannot know whether its run will be committed
(a queued or ``--temp`` experiment may never be applied), so nothing moves then.

``reservoir-dqn promote`` (:mod:`reservoir_dqn.commands.promote`), run on a committed revision (CI
runs it on main), offers the committed run's version the alias. :func:`decide` moves it
only when the version

1. was trained with the champion budget (``tracking.champion_budget``): smoke runs never compete;
2. was evaluated under the same conditions as the holder: otherwise the scores are not comparable;
3. is significantly better than the holder: Welch's one-sided test over seeds of "the
   new mean is at most the holder's" rejected at ``compare.significance``, with no
   tolerance margin (the gate's margin guards against regressions; with it here, no change
   could ever be shown better). A seed-only change, or a rise of +0.0004, stays put.

Each decision is one line. Each move is recorded where a teammate sees it: a line in the
registered model's description (the MLflow UI's model page) and an entry of its
``champion_history`` tag (JSON: from which version, to which, the verdict, the commit, the
time). MLflow keeps no history of aliases of its own; :func:`move_back` reads this one to
give the alias back to the previous holder.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reservoir_dqn.evaluation.statistics import MIN_SEEDS, compare
from reservoir_dqn.tracking.naming import Tag
from reservoir_dqn.tracking.store import Store, registered_model_name, retrying

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
HISTORY_TAG = Tag.CHAMPION_HISTORY
HISTORY_KEPT = 30  # entries of the history tag (the description keeps every line)
STATUS_TAG = Tag.CHAMPION_STATUS  # candidate | champion | former champion
SCORES_TAG = Tag.SEED_SCORES
CONDITIONS_TAG = Tag.CONDITIONS_DIGEST


def conditions_digest(conditions: Mapping[str, Any] | None) -> str:
    """A short digest of an evaluation's conditions ('' when it recorded none)."""
    if conditions is None:
        return ""
    return hashlib.sha256(json.dumps(conditions, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Evidence:
    """What a version was measured to be: its per-seed scores, where, and with which budget."""

    version: str
    scores: tuple[float, ...]
    conditions: str
    total_frames: int | None
    seeds: int | None

    @classmethod
    def of(cls, version: ModelVersion) -> Evidence:
        tags = version.tags
        try:
            scores = tuple(float(value) for value in json.loads(tags.get(SCORES_TAG, "[]")))
        except (TypeError, ValueError):
            scores = ()
        return cls(
            str(version.version),
            scores,
            tags.get(CONDITIONS_TAG, ""),
            _integer(tags.get(Tag.TOTAL_FRAMES)),
            _integer(tags.get(Tag.SEEDS)),
        )

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else math.nan


def _integer(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Decision:
    """Whether the alias moves, and the one line that says why; ``comparable`` is false when it cannot be judged."""

    move: bool
    reason: str
    verdict: str
    comparable: bool = True


def decide(
    candidate: Evidence, holder: Evidence | None, budget: tuple[int, int] | None, significance: float
) -> Decision:
    """The rule of the module's docstring, as a pure function of the evidence."""
    label = f"version {candidate.version}"
    trained = (candidate.total_frames, candidate.seeds)
    if budget is None or trained != budget:
        wanted = "no champion budget is set" if budget is None else f"{budget[0]:,} frames x {budget[1]} seeds"
        return Decision(
            False,
            f"{label} stays a candidate: trained {trained[0] or 0:,} frames x {trained[1] or 0} seeds, and only "
            f"the champion budget competes ({wanted}; tracking.champion_budget)",
            "other budget",
        )
    if holder is None:
        return Decision(True, f"{label} is the first champion (score {candidate.mean:.4f})", "first champion")
    if holder.version == candidate.version:
        return Decision(False, f"{label} already holds '{CHAMPION}'", "already champion")
    if not candidate.conditions or candidate.conditions != holder.conditions:
        return Decision(
            False,
            f"{label} stays a candidate: it was evaluated under other conditions than champion version "
            f"{holder.version} (test scenarios, MDP or score reference), so their scores do not compare; "
            "`reservoir-dqn promote --force` moves the alias anyway",
            "not comparable",
            comparable=False,
        )
    if min(len(candidate.scores), len(holder.scores)) < MIN_SEEDS:
        return Decision(
            False,
            f"{label} stays a candidate: {len(candidate.scores)} and {len(holder.scores)} seeds; "
            f"the test needs at least {MIN_SEEDS} a side",
            "too few seeds",
            comparable=False,
        )
    result = compare(holder.scores, candidate.scores, tolerance=0.0, significance=significance)
    shown = (
        f"score {result.change.mean:.4f} vs {result.baseline.mean:.4f}, difference {result.difference:+.4f} "
        f"[{result.ci_low:+.4f}, {result.ci_high:+.4f}], one-sided p = {result.p_improvement:.3g}"
    )
    if result.verdict == "improvement":
        return Decision(
            True, f"{label} is the new champion: significantly better than version {holder.version} ({shown})", shown
        )
    return Decision(
        False,
        f"{label} stays a candidate: not significantly better than champion version {holder.version} "
        f"({shown} >= {significance})",
        shown,
    )


def record_candidate(
    client: MlflowClient, name: str, version: str, scores: Sequence[float], conditions: Mapping[str, Any] | None
) -> None:
    """Store a version's evidence on it, and mark it a candidate (unless it already holds the alias)."""
    tags = {
        SCORES_TAG: json.dumps([round(float(score), 6) for score in scores]),
        "score": repr(float(sum(scores) / len(scores))),
        CONDITIONS_TAG: conditions_digest(conditions),
    }
    current = holder_version(client, name)
    if current is None or str(current.version) != version:
        tags[STATUS_TAG] = "candidate"
    for key, value in tags.items():
        retrying(client.set_model_version_tag, name, version, key, value)


def holder_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the alias, ``None`` when there is none (or the model is not registered)."""
    try:
        found: ModelVersion = client.get_model_version_by_alias(name, CHAMPION)
    except Exception:  # noqa: BLE001 - MLflow raises when the alias (or the model) does not exist
        return None
    return found


def history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    """The recorded moves of the alias, oldest first."""
    model = retrying(client.get_registered_model, name)
    try:
        entries = json.loads(model.tags.get(HISTORY_TAG, "[]"))
    except ValueError:
        return []
    return [entry for entry in entries if isinstance(entry, dict)]


def move(client: MlflowClient, name: str, to: str, verdict: str, commit: str) -> str:
    """Give the alias to version ``to`` and record the move; return the line that says so."""
    holder = holder_version(client, name)
    source = "-" if holder is None else str(holder.version)
    retrying(client.set_registered_model_alias, name, CHAMPION, to)
    retrying(client.set_model_version_tag, name, to, STATUS_TAG, "champion")
    if source not in ("-", to):
        retrying(client.set_model_version_tag, name, source, STATUS_TAG, "former champion")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    entry = {"from": source, "to": to, "verdict": verdict, "commit": commit, "time": when}
    entries = [*history(client, name), entry][-HISTORY_KEPT:]
    retrying(client.set_registered_model_tag, name, HISTORY_TAG, json.dumps(entries))
    model = retrying(client.get_registered_model, name)
    line = f"- {when}: '{CHAMPION}' {source} -> {to} ({verdict}; commit {commit[:10] or '-'})"
    description = (model.description or "").rstrip()
    heading = "Champion history:"
    text = f"{description}\n{line}" if heading in description else f"{description}\n\n{heading}\n{line}".lstrip()
    retrying(client.update_registered_model, name, description=text)
    return line.removeprefix("- ")


def move_back(client: MlflowClient, name: str, commit: str) -> str:
    """Give the alias back to the version that held it before the last move; return the line that says so.

    :raises LookupError: when no earlier holder is recorded.
    """
    holder = holder_version(client, name)
    current = None if holder is None else str(holder.version)
    for entry in reversed(history(client, name)):
        if current is not None and entry.get("to") == current:
            if entry.get("from", "-") != "-":
                return move(client, name, str(entry["from"]), f"moved back from version {current}", commit)
            break
    raise LookupError(f"{name}: no earlier holder of '{CHAMPION}' is recorded")


@dataclass(frozen=True)
class ChampionRegistry:
    """One environment's registered model, as ``reservoir-dqn promote`` uses it: the facade over the functions above.

    :param client: the connected store's client.
    :param name: the registered model's name.
    """

    client: MlflowClient
    name: str

    @classmethod
    def of(cls, store: Store, env_name: str) -> ChampionRegistry:
        return cls(store.client, registered_model_name(env_name))

    def version_of_run(self, run_id: str) -> str:
        """The version the export stage registered for the pipeline run ``run_id``.

        :raises LookupError: with the line to show, when the run is not in this store or has no version.
        """
        try:
            run = retrying(self.client.get_run, run_id)
        except Exception:  # noqa: BLE001 - MLflow raises when the run is not in this store
            raise LookupError(
                f"the committed run {run_id} is not in this MLflow store: point tracking.uri (or MLFLOW_TRACKING_URI) "
                "at the store it was trained against"
            ) from None
        version = run.data.tags.get(Tag.MODEL_VERSION)
        if version is None:
            raise LookupError(
                f"the committed run {run_id} has no registered model version: the export stage registers it "
                "(tracking.register_model off, export not run, or its registration waiting for the store in the outbox)"
            )
        return str(version)

    def record_candidate(self, version: str, scores: Sequence[float], conditions: Mapping[str, Any] | None) -> None:
        retrying(record_candidate, self.client, self.name, version, scores, conditions)

    def evidence(self, version: str) -> Evidence:
        return Evidence.of(retrying(self.client.get_model_version, self.name, version))

    def holder(self) -> Evidence | None:
        """The evidence of the version holding the alias, ``None`` when there is none."""
        holder = holder_version(self.client, self.name)
        return None if holder is None else Evidence.of(holder)

    def move(self, version: str, verdict: str, commit: str) -> str:
        return move(self.client, self.name, version, verdict, commit)

    def move_back(self, commit: str) -> str:
        return move_back(self.client, self.name, commit)
