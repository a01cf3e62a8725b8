"""Layer 3: score a model on examples: loss, perplexity, generation quality. Independent of training."""
