"""Layer 2: find, convert and load base models; apply adapters; the language-model loss. Never reads datasets."""
