"""Training every agent at once: the session (built or resumed), collection, replay, the loop in
algorithm order, checkpoints, the training curves and the summary the later stages read.

May import: evaluation, agent, envs, config, common (``tests/test_house.py`` checks every layer).
"""
