"""Generation for evaluation, chat, the server and export checks: one engine, one request type.

``InferenceEngine(model, tokenizer).generate([GenerationRequest(...)], on_token=...)`` returns a
``GenerationResult`` per request (text, finish_reason, token counts). See engine.py for the design.
"""

from tuneforge.inference.engine import InferenceEngine
from tuneforge.inference.request import BASE_ADAPTER, GenerationRequest, GenerationResult

__all__ = ["BASE_ADAPTER", "GenerationRequest", "GenerationResult", "InferenceEngine"]
