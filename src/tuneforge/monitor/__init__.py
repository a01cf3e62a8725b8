"""Layer 1: the event stream of a run (``events.jsonl``), written by training, read by everything else."""
