"""Layer 2: records in, token tensors out. Never loads a model (it takes a tokenizer)."""
