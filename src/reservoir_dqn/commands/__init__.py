"""What a user runs: ``reservoir-dqn <command>`` is :mod:`.cli`, each sub-command one module here (the
pipeline's stages ``train``, ``evaluate``, ``plot``, ``export``; ``compare`` and the CI gate,
``tune``, ``promote``, ``recipe``, ``advise``), the plumbing they share and the exit statuses.

May import: every package (the top layer; ``tests/test_house.py`` checks every layer).
"""
