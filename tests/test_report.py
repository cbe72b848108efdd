"""The evaluate stage's tables: columns that hold their width whatever the signs and magnitudes."""

from __future__ import annotations

import re
from dataclasses import replace

from reservoir_dqn.evaluation.report import held_out_report, report
from reservoir_dqn.evaluation.results import Evaluation, HeldOut, HeldOutScore
from reservoir_dqn.evaluation.scoring import Reference
from reservoir_dqn.evaluation.statistics import summarize

# Returns (and held-out scores) of both signs and of one to seven digits before the point: negative rewards, a
# reference close to random.
ROWS = [{"score": s, "return": r, "reliability": 0.99} for s, r in ((-1.25, -12345.6), (0.5, 3.2), (-0.75, -987.0))]


def _evaluation() -> Evaluation:
    return Evaluation.assemble(
        env="reservoir",
        first_seed=2_000_000_000,
        reference=Reference(394.1, 2019.4),
        optimum_label="the SDP optimum",
        headline=("score", "return", "reliability"),
        per_agent={"final": ROWS, "best": [ROWS[1], ROWS[1], ROWS[2]]},
        baselines={
            "sdp": {"score": 1.0, "return": 2019.4, "reliability": 1.0},
            "random": {"score": 0.0, "return": -373.4, "reliability": 0.676},
        },
        shipped=(0, "final"),
        episodes=100,
        settings={"env.name": "reservoir"},
    )


def _held_out() -> HeldOut:
    def score(value: float, low: float, high: float, mean_return: float) -> HeldOutScore:
        return HeldOutScore(value, low, high, mean_return, (value,))

    return HeldOut(
        windows=("1990-10", "2000-10"),
        block_years=3,
        resamples=2000,
        baselines={
            "foresight": score(1, 1, 1, 2100.0),
            "random": score(0, 0, 0, -1_234_567.8),
            "sdp": score(-12_345.678, -123_456.789, 7.5, -98_765.4),
        },
        dqn={"final": score(-1.5, -10.25, 0.5, -1500.0), "best": score(0.2, 0.1, 0.3, 8.0)},
        dqn_per_seed={"final": summarize([-1.5, 0.5, 0.2]), "best": summarize([0.2, 0.1, 0.3])},
        dqn_over_sdp={"final": (0.9, 0.8, 1.0), "best": (1.1, 1.0, 1.2)},
    )


def _assert_columns_line_up(table: list[str], columns: int) -> None:
    """Each line splits on two spaces or more into ``columns`` cells, and every cell after the first ends where
    the header's does (right-aligned), the first starting where the header's does."""
    spans = [[match.span() for match in re.finditer(r"\S+(?: \S+)*", line)] for line in table]
    assert all(len(cells) == columns for cells in spans), table
    header = spans[0]
    for cells in spans[1:]:
        assert cells[0][0] == header[0][0] and [end for _, end in cells[1:]] == [end for _, end in header[1:]], table


def test_the_evaluate_table_lines_up_with_negative_returns_of_any_magnitude() -> None:
    lines = report(_evaluation()).splitlines()
    table = lines[1:6]  # the header, the two DQN rows, the two baselines
    assert table[0].split() == ["policy", "score", "return", "reliability"]
    assert "-12,345.6" not in table[1] and "-4,443.1 [-21,488.3, 12,602.1]" in table[1]  # the mean of seeds, wide
    assert table[4].split() == ["random", "0.000", "-373.4", "0.676"]
    _assert_columns_line_up(table, columns=4)


def test_the_held_out_table_lines_up_with_negative_scores_and_returns_of_any_magnitude() -> None:
    lines = held_out_report(_held_out(), seeds=3)
    table = lines[1:7]  # the header, the two DQN rows, three references
    assert "-12345.678 [-123456.789, 7.500]" in table[5] and table[5].endswith("-98,765.4")
    _assert_columns_line_up(table, columns=3)
    assert lines == report(replace(_evaluation(), held_out=_held_out())).splitlines()[-len(lines) :]
