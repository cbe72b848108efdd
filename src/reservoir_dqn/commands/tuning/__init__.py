"""Hyperparameter search with Optuna, by its jobs: the shared storage (:mod:`.storage`) and a trial
(:mod:`.objective`). The study's own MLflow run and Optuna's figures are
:mod:`reservoir_dqn.tracking.study`'s; the command is :mod:`reservoir_dqn.commands.tune`.
"""
