"""The recipe reservoir-delaware as tests use it: its record read from the repository wherever the test runs."""

from __future__ import annotations

from reservoir_dqn.commands.recipe import overrides
from reservoir_dqn.config import load_config
from reservoir_dqn.envs.reservoir.model import ReservoirModel
from reservoir_dqn.envs.reservoir.profile import ReservoirProfile
from tests.conftest import REPO

RECORD = REPO / "data" / "delaware_monthly_hm3.csv"
DELAWARE = load_config(
    REPO / "params.yaml",
    [*overrides("reservoir-delaware", REPO / "recipes"), f"env.reservoir.record.path={RECORD}"],
).env
CONFIG = DELAWARE.reservoir
MODEL = ReservoirModel.from_config(CONFIG)
PROFILE = ReservoirProfile(DELAWARE.name)  # unregistered: the registry stays as other tests expect it
