"""``reservoir-dqn front``: the exact front of energy against water supply, and where each agent sits on it.

Computes the reservoir's convex coverage set by SDP at the weights optimistic linear support
picks, with its certificate (:mod:`reservoir_dqn.envs.reservoir.front`), evaluates every
trained agent (``models/agents/final.pt``, or the model files given, each trained for its own
weighting), the standard operating policy and the configured SDP optimum on it, exactly, and
writes::

    front/front.json   the vertices in engineering units, the certificate, each policy's point and losses
    front/front.png    the front as an operator reads it

With ``--held-out`` (a reservoir on a river's record), the same trade-off on the held-out
years instead (:mod:`reservoir_dqn.envs.reservoir.held_out_front`): the foresight front of those
years, the Markov SDP solved at the same weights and replayed on them, SOP and the agents,
into ``front/held_out_front.json`` and ``front/held_out_front.png``.

With ``--pick LAM``, the front's optimum at the weighting ``lam`` also becomes a policy that ships
(:mod:`reservoir_dqn.release.front_pick`): a model file, its checked ONNX and its maps in
``front/pick-LAM/``, which ``advise --model`` and ``front --models`` take as they take an agent's;
``front.json`` records it under ``picked`` and the figure marks it.

(a folder of its own: no DVC stage writes there, and git ignores it)

    .venv/bin/reservoir-dqn front
    .venv/bin/reservoir-dqn front --set env.reservoir.weight_spill=2 --no-agents
    .venv/bin/reservoir-dqn front --pick 0.3
    .venv/bin/reservoir-dqn front --held-out $(.venv/bin/reservoir-dqn recipe reservoir-delaware)

Each policy's losses are in reward units of the configured reward: at its own weight
(``lam = 1/2``, the reward it was trained on; for the agents this is the SDP gap the exact
account reports), and expected and largest over ``lam`` uniform on ``[0, 1]``, which say how
far one policy is from serving every trade-off. With several model files, seed ``i``'s set is
agent ``i`` of every file; each set is scored against the front by its expected and largest
utility loss over ``lam`` and its hypervolume as a share of the front's, with a 95% interval over
the seeds.
"""

from __future__ import annotations

import argparse
import shlex
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from torchrl.modules import QValueActor

from reservoir_dqn.agent import NetworkSpec, check_table, load_model, q_module
from reservoir_dqn.commands.plumbing import run_stage
from reservoir_dqn.common.files import OutputSet, write_atomic, write_json
from reservoir_dqn.config import DEFAULT_PARAMS, Config, ConfigError, add_config_arguments, config_from_args
from reservoir_dqn.envs import profile
from reservoir_dqn.envs.reservoir.front import (
    Evaluator,
    Front,
    Point,
    agent_points,
    describe,
    exact_front,
    hypervolume,
    per_year,
    set_utility_losses,
    sop_table,
)
from reservoir_dqn.envs.reservoir.front_figure import front_figure, held_out_front_figure
from reservoir_dqn.envs.reservoir.held_out_front import held_out_front
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import reservoir_settings
from reservoir_dqn.envs.reservoir.replay import RecordReplay
from reservoir_dqn.envs.reservoir.settings import ReservoirConfig
from reservoir_dqn.evaluation.statistics import summarize
from reservoir_dqn.release.front_pick import NEEDS_TIME_LEFT, table_spec, write_pick


def report(front: Front, model: ReservoirModel, agents: dict[str, list[Point]], sop: Point) -> dict[str, object]:
    """The front, SOP and every model file's agents, in engineering units with their losses (:func:`describe`);
    the time the front took; and, for the agents of every file together, each seed's set scored against the front."""
    result: dict[str, object] = describe(front, model, sop, agents) | {"seconds": round(front.seconds, 2)}
    if agents:
        result["sets"] = set_scores(front, model, list(agents.values()))
    return result


def set_scores(front: Front, model: ReservoirModel, files: list[list[Point]]) -> dict[str, object]:
    """Seed ``i``'s set is agent ``i`` of every model file: its expected and largest utility loss over ``lam`` and its
    hypervolume as a share of the front's (energy against deficit, from the front's worst energy and deficit)."""
    seeds = min(len(points) for points in files)
    vertices = [per_year(model, vertex) for vertex in front.vertices]
    reference = (min(v["energy_gwh_per_year"] for v in vertices), max(v["deficit_hm3_per_year"] for v in vertices))

    def area(points: list[Point]) -> float:
        yearly = [per_year(model, point) for point in points]
        return hypervolume([(y["energy_gwh_per_year"], y["deficit_hm3_per_year"]) for y in yearly], reference)

    whole = area(front.vertices)
    expected, largest, ratio = [], [], []
    for seed in range(seeds):
        members = [points[seed] for points in files]
        mean_loss, max_loss = set_utility_losses(front, model, members)
        expected.append(mean_loss)
        largest.append(max_loss)
        ratio.append(area(members) / whole if whole > 0 else float("nan"))
    return {
        "members": len(files),
        "expected_utility_loss": summarize(expected, low=0.0).as_dict(),
        "maximum_utility_loss": summarize(largest, low=0.0).as_dict(),
        "hypervolume_ratio": summarize(ratio, low=0.0, high=1.0).as_dict(),
    }


def run(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reservoir-dqn front", description="The exact front of energy against supply, and the agents on it."
    )
    parser.add_argument(
        "--models",
        type=Path,
        nargs="+",
        help="agents' model files, each trained for its own weighting (default: paths.agents/final.pt)",
    )
    parser.add_argument("--no-agents", action="store_true", help="the front, SOP and the SDP only")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-4,
        help="stop refining where no weight can gain more than this share of the configured optimum's utility",
    )
    parser.add_argument("--max-solves", type=int, default=1000, help="at most this many SDP solves (default 1000)")
    parser.add_argument(
        "--held-out", action="store_true", help="the trade-off on the held-out record, against foresight's front"
    )
    parser.add_argument(
        "--pick",
        type=_weighting,
        metavar="LAM",
        help="also write the front's optimum at this weighting as a policy: model file, ONNX, maps (see --pick-to)",
    )
    parser.add_argument("--pick-to", type=Path, help="the pick's folder (default: front/pick-LAM)")
    parser.add_argument("--out", type=Path, help="the JSON (default: front/front.json, or held_out_front.json)")
    parser.add_argument("--plot", type=Path, help="the figure (default: front/front.png, or held_out_front.png)")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    config: Config = config_from_args(args)
    if profile(config.env).advisor(config.env) is None:
        raise ConfigError(f"env.name: front needs a reservoir (reservoir or reservoir-<river>), not {config.env.name}")
    if not 0.0 <= args.tolerance < 1.0:
        raise ConfigError(f"--tolerance ({args.tolerance}) must lie in [0, 1)")
    if args.max_solves < 3:
        raise ConfigError(f"--max-solves ({args.max_solves}) must be at least 3 (both ends and the configured reward)")
    reservoir = reservoir_settings(config.env)
    if reservoir.end_value != "none":
        raise ConfigError(
            f"env.reservoir.end_value ({reservoir.end_value}): the front weighs what a horizon delivers, and the "
            "end's water value is in reward units, not energy or supply; set env.reservoir.end_value=none"
        )
    folder = _pick_folder(args, reservoir)
    model = ReservoirModel.from_config(reservoir)
    if args.held_out:
        held_out(config, args, model)
        return
    agents: dict[str, list[Point]] = {}
    if not args.no_agents:
        for path, network, spec in _model_files(config, args.models, model):
            agents[str(path)] = agent_points(model, q_module(network), spec.agents)
    front = exact_front(model, tolerance=args.tolerance, max_solves=args.max_solves)
    sop = Evaluator(model).point(sop_table(model))
    result = report(front, model, agents, sop)
    out, plot = args.out or Path("front/front.json"), args.plot or Path("front/front.png")
    picked: dict[str, Any] = {}
    with OutputSet([out, plot, *([folder] if folder is not None else [])]) as outputs:  # all of them, or none
        if folder is not None:
            staged = outputs.path(folder)
            staged.mkdir()
            picked = result["picked"] = write_pick(config, model, front, args.pick, staged)
        _write(result, front_figure(result, config.env.name), outputs.path(out), outputs.path(plot))
    print(
        f"front: {len(front.vertices)} vertices from {front.solves} SDP solves in {front.seconds:.1f} s, certificate "
        f"{front.certificate:.3g} ({result['certificate_share']:.1e} of the configured optimum's utility); "
        f"{sum(len(points) for points in agents.values())} agents placed; {out} and {plot}"
    )
    if folder is not None:
        print(picked_lines(picked, folder, model, args))


def _weighting(text: str) -> float:
    """``--pick``'s value: a float, -0 read as 0 (one weighting, one folder name and label)."""
    return float(text) + 0.0


def _pick_folder(args: argparse.Namespace, reservoir: ReservoirConfig) -> Path | None:
    """Where ``--pick`` writes (``None`` without it), every reason to refuse it checked before any work: a ``lam``
    outside ``[0, 1]``, ``--held-out``, a reservoir whose observation hides the months left, and a ``--pick-to``
    that names something other than a new folder or an earlier pick's (which is replaced whole)."""
    if args.pick is None:
        if args.pick_to is not None:
            raise ConfigError("--pick-to names the folder of --pick LAM: give --pick too")
        return None
    if args.held_out:
        raise ConfigError("--pick picks a point of the exact front, not of the held-out one: leave out --held-out")
    if not 0.0 <= args.pick <= 1.0:
        raise ConfigError(f"--pick ({args.pick}) must lie in [0, 1], the weighting lam of energy against supply")
    if not reservoir.observe_time_left:
        raise ConfigError(NEEDS_TIME_LEFT)
    folder: Path = args.pick_to or Path(f"front/pick-{args.pick:g}")
    if (folder.exists() and not (folder / "pick.json").is_file()) or not folder.resolve().name:
        raise ConfigError(
            f"--pick-to {folder}: it exists and is not an earlier pick's folder (no pick.json), and the pick "
            "replaces its folder whole; name a new folder"
        )
    return folder


def picked_lines(picked: dict[str, Any], folder: Path, model: ReservoirModel, args: argparse.Namespace) -> str:
    """What ``--pick`` prints: the point, what it gives up in the configured reward, the files and what to run next
    (``advise`` at half the active storage, with this command's parameters)."""
    half = model.config.capacity * model.config.unit_hm3 / 2
    state = f"--storage-hm3 {half:g} --month Jun"
    if model.chain.persistent:  # the policy reads last month's class: May's middle class, in hm3
        may = float(model.inflow_values[4, model.chain.classes // 2]) * model.config.unit_hm3
        state += f" --last-inflow-hm3 {may:.0f}"
    given = [] if args.params == DEFAULT_PARAMS else ["--params", str(args.params)]
    settings = shlex.join([*given, *(part for setting in args.overrides for part in ("-S", setting))])
    return "\n".join([
        f"picked lam {picked['lam']:g}: {picked['energy_gwh_per_year']:,.1f} GWh a year, "
        f"{picked['deficit_hm3_per_year']:,.2f} hm3 a year of deficit, {picked['spill_hm3_per_year']:,.0f} hm3 a year "
        f"spilled; in the configured reward it earns {picked['configured_return']:,.1f}, "
        f"{picked['configured_optimum_return'] - picked['configured_return']:,.2f} less than the configured optimum "
        f"({picked['configured_optimum_return']:,.1f})",
        f"  {folder}/: model.pt, policy.onnx (ONNX Runtime gives its release on all {picked['onnx_checked_states']:,} "
        "states), policy_map.png, policy_disagreement.png, value_lost.png, pick.json",
        f"  advise with it: .venv/bin/reservoir-dqn advise --model {shlex.quote(str(folder / 'model.pt'))} "
        f"{state}" + (f" {settings}" if settings else ""),
    ])  # fmt: skip


def _write(result: dict[str, Any], figure: Figure, out: Path, plot: Path) -> None:
    """The JSON to ``out``, the figure to ``plot`` (a PNG), each atomically; the figure is closed."""
    write_json(out, result)
    plot.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(plot, partial(figure.savefig, dpi=110, format="png"))
    plt.close(figure)


def _model_files(
    config: Config, models: list[Path] | None, model: ReservoirModel
) -> list[tuple[Path, QValueActor, NetworkSpec]]:
    """Each model file given (default: the trained agents' final networks, if any), loaded, checked against the
    reservoir: ``(path, network, spec)``."""
    loaded = []
    for path in models or [Path(config.paths.agents) / "final.pt"]:
        if models is None and not path.exists():
            break  # nothing trained yet: the front alone
        network, spec = load_model(path)
        if spec.env_name != config.env.name or spec.obs_dim != model.observation_size:
            raise ConfigError(
                f"{path}: its agents were trained on {spec.env_name} ({spec.obs_dim} observations), not on this "
                f"reservoir ({config.env.name}, {model.observation_size}); give --models or --no-agents"
            )
        check_table(spec, table_spec(model), path)
        loaded.append((path, network, spec))
    return loaded


def held_out(config: Config, args: argparse.Namespace, model: ReservoirModel) -> None:
    """``--held-out``: the trade-off on the held-out years (see the module's docstring)."""
    replay = profile(config.env).held_out(config.env)
    if not isinstance(replay, RecordReplay):
        raise ConfigError(
            f"--held-out: {config.env.name} has no held-out record (env.reservoir.inflow_model "
            f"{reservoir_settings(config.env).inflow_model}); use a reservoir on a river's record"
        )
    files = [] if args.no_agents else _model_files(config, args.models, model)
    started = time.perf_counter()
    result = held_out_front(replay, {str(path): (network, spec.agents) for path, network, spec in files})
    result["seconds"] = round(time.perf_counter() - started, 2)
    out, plot = args.out or Path("front/held_out_front.json"), args.plot or Path("front/held_out_front.png")
    _write(result, held_out_front_figure(result, config.env.name), out, plot)
    print(
        f"held-out front: foresight and the Markov SDP at {len(result['foresight'])} weights on "
        f"{len(result['windows'])} held-out windows in {result['seconds']:.1f} s; "
        f"{sum(len(points) for points in result['agents'].values())} agents placed; {out} and {plot}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage(run, argv)
