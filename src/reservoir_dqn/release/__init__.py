"""What leaves the pipeline for a control room: the policy as plain tensors, its ONNX export and
check, the model card, and the advice for one state.

May import: training, evaluation, agent, envs, config, common (``tests/test_house.py`` checks every layer).
"""
