"""reservoir_dqn: DQN agents trained with TorchRL on a water reservoir (and CartPole), in a DVC + MLflow pipeline."""
