"""Layer 0: errors, paths and small shared helpers. Standard library only, no torch."""
