"""Layer 3: the training loop, optimizer and schedule, checkpoints. Knows nothing of evaluation or export."""
