"""Turn examples into token ids and labels with the model's own chat template.

Loss is computed only on assistant turns (the prompt is masked with -100) unless
``train_on_prompt``; the end-of-turn token that closes each assistant turn is always trained, so the
tuned model learns to stop. Text examples are trained on every token, with EOS appended.

Tool-calling conversations (``example.tools``, assistant ``tool_calls``, ``tool`` messages) are
rendered with ``tools=`` through the model's own template, which must support tools
(``tool_calls.check_tool_template`` raises a ``DatasetError`` naming the model otherwise); the
tool-call turns are assistant turns and trained, the tool answers and tool definitions are not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneforge.data.examples import TrainingExample
from tuneforge.data.tool_calls import check_tool_template, has_tools, template_messages

IGNORE_INDEX = -100

# Used only when a tokenizer has no chat template of its own (plain base models).
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)


@dataclass
class EncodedExample:
    """Token ids and labels of one example (labels are -100 where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]
    truncated_tokens: int = 0  # how many tokens were cut by max_length

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass
class EncodedPair(EncodedExample):
    """A preference pair: ``input_ids``/``labels`` are the chosen answer's, ``rejected_*`` the rejected one's.

    Both share the prompt and are labelled only on their answer. The pair is the unit a pairwise loss
    averages over, so ``trained_tokens`` is 1 (0 when truncation left either answer without a token):
    the loop divides a step's summed loss by it exactly as it divides SFT's by labelled tokens.
    """

    rejected_ids: list[int] = field(default_factory=list)
    rejected_labels: list[int] = field(default_factory=list)

    @property
    def trained_tokens(self) -> int:
        trained = any(label != IGNORE_INDEX for label in self.labels) and any(
            label != IGNORE_INDEX for label in self.rejected_labels)
        return int(trained)

    @property
    def answer_tokens(self) -> int:
        """Labelled tokens of both answers."""
        return sum(1 for label in (*self.labels, *self.rejected_labels) if label != IGNORE_INDEX)

    def sequences(self) -> tuple[EncodedExample, EncodedExample]:
        """The chosen and the rejected sequence as plain examples."""
        return (EncodedExample(self.input_ids, self.labels),
                EncodedExample(self.rejected_ids, self.rejected_labels))


def chat_template_of(tokenizer: Any) -> str:
    """The tokenizer's own chat template, or tuneforge's plain fallback."""
    return getattr(tokenizer, "chat_template", None) or FALLBACK_CHAT_TEMPLATE


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = False,
                tools: list[dict[str, Any]] | None = None) -> str:
    """The conversation as the model sees it, as text; with ``tools`` (or tool calls) through a template that supports them."""
    template = chat_template_of(tokenizer)
    if not tools and not has_tools(messages):
        clean = [{"role": m["role"], "content": m["content"]} for m in messages]
        return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=add_generation_prompt, chat_template=template)
    check_tool_template(tokenizer, template)
    return tokenizer.apply_chat_template(template_messages(messages), tools=tools or None, tokenize=False,
                                         add_generation_prompt=add_generation_prompt, chat_template=template)


def render_prompt(tokenizer: Any, example: TrainingExample) -> str:
    """The text a model is given to produce ``example.output`` (text examples: the empty prompt)."""
    if example.is_text:
        return ""
    return render_chat(tokenizer, example.prompt_messages, add_generation_prompt=True, tools=example.tools)


def _segments(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, trained) pieces at assistant-turn boundaries."""
    full = render_chat(tokenizer, messages, tools=tools)
    pieces: list[tuple[str, bool]] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(render_chat(tokenizer, messages[:index], add_generation_prompt=True, tools=tools))
        end = len(render_chat(tokenizer, messages[: index + 1], tools=tools))
        if start < cursor or not full.startswith(render_chat(tokenizer, messages[: index + 1], tools=tools)):
            # A template that rewrites earlier turns: find the answer text itself instead.
            if not message["content"]:
                continue  # a pure tool call has no text of its own to find
            start = full.find(message["content"], cursor)
            end = start + len(message["content"]) if start >= 0 else -1
            if start < 0:
                continue
        pieces.append((full[cursor:start], False))
        pieces.append((full[start:end], message.get("weight", 1) == 1))
        cursor = end
    pieces.append((full[cursor:], False))
    return [(text, trained) for text, trained in pieces if text]


def encode_example(tokenizer: Any, example: TrainingExample, max_length: int, train_on_prompt: bool = False) -> EncodedExample:
    """Token ids and labels for one example, truncated to ``max_length`` tokens."""
    input_ids: list[int] = []
    labels: list[int] = []
    if example.is_text:
        ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        input_ids, labels = list(ids), list(ids)
    else:
        for text, trained in _segments(tokenizer, example.messages, example.tools):
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            input_ids.extend(ids)
            labels.extend(ids if (trained or train_on_prompt) else [IGNORE_INDEX] * len(ids))
    cut = max(0, len(input_ids) - max_length)
    return EncodedExample(input_ids[:max_length], labels[:max_length], truncated_tokens=cut)


def encode_pair(tokenizer: Any, example: TrainingExample, max_length: int) -> EncodedPair:
    """The chosen and rejected sequences of a preference ``example``, each labelled on its answer only."""
    if not example.is_preference:
        raise ValueError(f"{example.source or 'example'}: not a preference pair (no rejected answer)")
    chosen = encode_example(tokenizer, example, max_length)
    rejected_example = TrainingExample(messages=[*example.prompt_messages, {"role": "assistant", "content": example.rejected}])
    rejected = encode_example(tokenizer, rejected_example, max_length)
    return EncodedPair(chosen.input_ids, chosen.labels, truncated_tokens=chosen.truncated_tokens + rejected.truncated_tokens,
                       rejected_ids=rejected.input_ids, rejected_labels=rejected.labels)


@dataclass
class EncodedDataset:
    """Encoded examples plus what encoding had to do to them (reported, never silent)."""

    items: list[EncodedExample]
    truncated_examples: list[str]  # sources of the examples that were cut
    dropped_examples: list[str]  # sources of examples left with no trained token after truncation

    @property
    def total_tokens(self) -> int:
        return sum(len(item.input_ids) for item in self.items)

    @property
    def trained_tokens(self) -> int:
        return sum(item.trained_tokens for item in self.items)


def encode_examples(tokenizer: Any, examples: list[TrainingExample], max_length: int, train_on_prompt: bool = False,
                    pairs: bool = False) -> EncodedDataset:
    """Encode all examples; examples with nothing left to train on after truncation are dropped.

    ``pairs``: encode preference examples as ``EncodedPair`` (chosen and rejected), for pairwise objectives.
    """
    items: list[EncodedExample] = []
    truncated, dropped = [], []
    for example in examples:
        encoded = (encode_pair(tokenizer, example, max_length) if pairs
                   else encode_example(tokenizer, example, max_length, train_on_prompt))
        if encoded.truncated_tokens:
            truncated.append(example.source or "?")
        if encoded.trained_tokens == 0:
            dropped.append(example.source or "?")
            continue
        items.append(encoded)
    return EncodedDataset(items, truncated, dropped)
