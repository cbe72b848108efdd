"""Judging policies: seeded test episodes, the score and its reference, statistics over seeds,
the typed results, the held-out record's re-operation, and the names of every test result.

May import: agent, envs, config, common (``tests/test_house.py`` checks every layer).
"""
