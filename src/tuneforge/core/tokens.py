"""Token names shared by the data and model layers."""

# Chat end-of-turn markers of common templates (ChatML, Llama 3, Phi, Gemma), besides EOS.
END_OF_TURN_MARKERS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")
