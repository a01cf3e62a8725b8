"""``ollama``: a directory ``ollama create NAME -f Modelfile`` takes: the GGUF and a ``Modelfile``.

The Modelfile always has a ``TEMPLATE`` (without one Ollama sends bare text and the model answers
gibberish), translated from the model's own chat template, the template's default ``SYSTEM`` if it
inserts one, and a ``PARAMETER stop`` for every end-of-turn token; ``ADAPTER`` when a LoRA GGUF is
served on a base GGUF. The translation probes the HF template instead of parsing Jinja: it renders
each role alone with a marker as content, learns each role's prefix and suffix and the generation
prompt, and accepts the result only when concatenating them reproduces the HF rendering of golden
conversations exactly (ChatML, Llama-3-style and similar per-message templates). Anything else is
refused with a clear message rather than exported with a template that answers differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.core.registries import EXPORTERS
from tuneforge.export import ExportCheck, ExportError, ExportResult
from tuneforge.export.gguf import GGUFExporter, find_gguf

MARKER = "\u2063TUNEFORGE\u2063"
ROLES = ("system", "user", "assistant")
GOLDEN_CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "color of sky?"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
     {"role": "user", "content": "q2\nwith a second line"}],
]


@dataclass
class ChatFormat:
    """A per-message chat template: each role's text before and after the content, and the generation prompt."""

    prefixes: dict[str, str]
    suffixes: dict[str, str]
    generation_prompt: str
    start: str = ""  # once, before the first message (a BOS some templates write)
    default_system: str | None = None
    stops: list[str] = field(default_factory=list)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """What the Modelfile's TEMPLATE renders for ``messages`` (Ollama inserts SYSTEM as a first system message)."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}] + list(messages)
        text = self.start + "".join(self.prefixes[m["role"]] + m["content"] + self.suffixes[m["role"]] for m in messages)
        return text + (self.generation_prompt if add_generation_prompt else "")

    def go_template(self) -> str:
        """The same as an Ollama (Go text/template) TEMPLATE over ``.Messages``."""
        branches = []
        for index, role in enumerate(ROLES):
            keyword = "if" if index == 0 else "else if"
            branches.append(f'{{{{ {keyword} eq .Role "{role}" }}}}{_go(self.prefixes[role])}{{{{ .Content }}}}{_go(self.suffixes[role])}')
        body = "".join(branches) + "{{ end }}"
        return f"{_go(self.start)}{{{{- range .Messages }}}}{body}{{{{ end }}}}{_go(self.generation_prompt)}"


def _go(text: str) -> str:
    """Literal text inside a Go template: only ``{{`` needs escaping."""
    return text.replace("{{", '{{ "{{" }}')


def learn_chat_format(tokenizer: Any) -> ChatFormat:
    """The ``ChatFormat`` of ``tokenizer``'s chat template; ``ExportError`` when it is not a per-message template."""
    from tuneforge.data.tokenize import render_chat
    from tuneforge.model.load import end_of_turn_ids

    def render(messages: list[dict[str, str]], generation: bool = False) -> str:
        return render_chat(tokenizer, messages, add_generation_prompt=generation)

    try:
        system_alone = render([{"role": "system", "content": MARKER}])
        start_and_prefix, system_suffix = system_alone.split(MARKER)
        user_after_system = render([{"role": "system", "content": MARKER}, {"role": "user", "content": MARKER}])
        _, user_part = user_after_system.split(system_alone, 1) if user_after_system.startswith(system_alone) else ("", "")
        if not user_part:
            raise ValueError("a user turn changes the system turn before it")
        user_prefix, user_suffix = user_part.split(MARKER)
        assistant_part = render([{"role": "system", "content": MARKER}, {"role": "user", "content": MARKER},
                                 {"role": "assistant", "content": MARKER}])[len(user_after_system):]
        assistant_prefix, assistant_suffix = assistant_part.split(MARKER)
        generation_prompt = render([{"role": "system", "content": MARKER}, {"role": "user", "content": MARKER}], True)[len(user_after_system):]
    except (ValueError, TypeError, Exception) as error:  # a template that raises on these probes is not per-message
        raise ExportError(_untranslatable(tokenizer, f"probing it failed: {error}")) from None
    start, system_prefix = _split_start(start_and_prefix, user_prefix)
    chat = ChatFormat(prefixes={"system": system_prefix, "user": user_prefix, "assistant": assistant_prefix},
                      suffixes={"system": system_suffix, "user": user_suffix, "assistant": assistant_suffix},
                      generation_prompt=generation_prompt, start=start)
    chat.default_system = _default_system(render([{"role": "user", "content": MARKER}]), chat)
    chat.stops = [tokenizer.convert_ids_to_tokens(token) for token in end_of_turn_ids(tokenizer)]
    for messages in GOLDEN_CONVERSATIONS:
        expected, got = render(messages, True), chat.render(messages)
        if expected != got:
            raise ExportError(_untranslatable(tokenizer, f"for {messages} it renders {expected!r}, the translation {got!r}"))
    return chat


def _split_start(start_and_prefix: str, user_prefix: str) -> tuple[str, str]:
    """Text written once before the first message (e.g. a BOS) vs the system role's own prefix.

    The start is what precedes the system prefix when the role prefixes share a shape: the longest
    head of ``start_and_prefix`` after which the rest begins like the user prefix's first character.
    """
    for cut in range(len(start_and_prefix) + 1):
        rest = start_and_prefix[cut:]
        if rest and user_prefix and rest[:1] == user_prefix[:1]:
            return start_and_prefix[:cut], rest
    return "", start_and_prefix


def _default_system(user_alone: str, chat: ChatFormat) -> str | None:
    """The system message the template inserts when a conversation has none (SmolLM2 does), else None."""
    plain = chat.start + chat.prefixes["user"] + MARKER + chat.suffixes["user"]
    if user_alone == plain:
        return None
    head = chat.start + chat.prefixes["system"]
    tail = chat.suffixes["system"] + chat.prefixes["user"] + MARKER + chat.suffixes["user"]
    if user_alone.startswith(head) and user_alone.endswith(tail):
        return user_alone[len(head):len(user_alone) - len(tail)]
    return None


def _untranslatable(tokenizer: Any, why: str) -> str:
    return (f"cannot translate the chat template of {getattr(tokenizer, 'name_or_path', 'the model')} into an Ollama "
            f"TEMPLATE ({why}); only per-message templates (ChatML, Llama 3, ...) are translated. Export --format gguf "
            "and write the Modelfile's TEMPLATE by hand")


def modelfile(chat: ChatFormat, gguf: str, adapter: str | None = None, parameters: dict[str, Any] | None = None) -> str:
    """The text of a Modelfile serving ``gguf`` (and a LoRA ``adapter`` GGUF) with ``chat``'s template."""
    lines = [f"FROM ./{gguf}"]
    if adapter:
        lines.append(f"ADAPTER ./{adapter}")
    lines.append(f'TEMPLATE """{chat.go_template()}"""')
    if chat.default_system is not None:
        lines.append(f'SYSTEM """{chat.default_system}"""')
    for stop in chat.stops:
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in (parameters or {}).items():
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n"


def render_go_template(template: str, messages: list[dict[str, str]], system: str | None = None) -> str:
    """Render the subset of Go templates ``ChatFormat.go_template`` writes, as Ollama would.

    Used by the tests to compare a Modelfile's TEMPLATE with the HF chat template without Ollama.
    ``system`` (the Modelfile's SYSTEM) becomes the first message when the conversation has none.
    """
    import re

    if system is not None and (not messages or messages[0]["role"] != "system"):
        messages = [{"role": "system", "content": system}] + list(messages)
    head, rest = template.split("{{- range .Messages }}", 1)
    body, tail = rest.rsplit("{{ end }}", 1)
    branches = re.findall(r'\{\{ (?:if|else if) eq \.Role "(\w+)" \}\}(.*?)(?=\{\{ else if|\{\{ end \}\}$)', body, re.S)
    parts = {role: text.split("{{ .Content }}") for role, text in branches}
    unescape = lambda text: text.replace('{{ "{{" }}', "{{")  # noqa: E731
    out = unescape(head)
    for message in messages:
        before, after = parts[message["role"]]
        out += unescape(before) + message["content"] + unescape(after)
    return out + unescape(tail)


def read_modelfile(path: Path) -> dict[str, Any]:
    """The FROM, ADAPTER, TEMPLATE, SYSTEM and stop lines of a Modelfile ``modelfile`` wrote."""
    import re

    text = path.read_text(encoding="utf-8")
    found = {key: re.search(rf'^{key} """(.*?)"""$', text, re.S | re.M) for key in ("TEMPLATE", "SYSTEM")}
    line = lambda key: (re.search(rf"^{key} \./(\S+)$", text, re.M) or [None, None])[1]  # noqa: E731
    return {"from": line("FROM"), "adapter": line("ADAPTER"), "stops": re.findall(r'^PARAMETER stop "(.*)"$', text, re.M),
            "template": found["TEMPLATE"][1] if found["TEMPLATE"] else None,
            "system": found["SYSTEM"][1] if found["SYSTEM"] else None}


def check_modelfile(path: Path, tokenizer: Any) -> list[str]:
    """What in the Modelfile at ``path`` would make Ollama answer differently from the HF chat template.

    Its TEMPLATE (with its SYSTEM) must render every golden conversation exactly as ``tokenizer``'s
    chat template does, and it must stop at every end-of-turn token. Returns the problems (empty: none).
    """
    from tuneforge.data.tokenize import render_chat
    from tuneforge.model.load import end_of_turn_ids

    parts = read_modelfile(path)
    if not parts["template"]:
        return [f"{path} has no TEMPLATE: Ollama would send bare text and the model answer gibberish"]
    problems = []
    for messages in GOLDEN_CONVERSATIONS:
        expected = render_chat(tokenizer, messages, add_generation_prompt=True)
        got = render_go_template(parts["template"], messages, parts["system"])
        if got != expected:
            problems.append(f"template: the Modelfile renders {messages} as {got!r}, the HF chat template as {expected!r}")
    missing = [tokenizer.convert_ids_to_tokens(t) for t in end_of_turn_ids(tokenizer)
               if tokenizer.convert_ids_to_tokens(t) not in parts["stops"]]
    if missing:
        problems.append(f"template: the Modelfile does not stop at the end-of-turn token(s) {', '.join(missing)}")
    return problems


class OllamaExporter(GGUFExporter):
    """The GGUF (merged) and a Modelfile; with ``lora=True``, a base GGUF plus the LoRA GGUF (``ADAPTER``).

    LoRA mode serves the adapter on an unmerged base, as ``ollama create`` does with an ``ADAPTER``
    line: ``base-<quantization>.gguf`` (the base model, quantized like ``--format gguf``) and
    ``adapter-f16.gguf`` (``convert_lora_to_gguf.py``). Its check runs the pair through llama.cpp.
    """

    name = "ollama"
    description = "a GGUF and a Modelfile (TEMPLATE, SYSTEM, stop tokens) for `ollama create`; --lora: base GGUF + ADAPTER"
    methods: tuple[str, ...] = ()
    supports_lora = True

    def preflight(self, run: Any, lora: bool = False, extra_adapters: Any = (), **options: Any) -> None:
        if extra_adapters:
            raise ExportError("an Ollama Modelfile serves one ADAPTER; drop --add-adapter (ONNX holds several: --format onnx)")
        if lora:
            from tuneforge.export.gguf import GGUFLoraExporter

            GGUFLoraExporter().preflight(run)
        else:
            super().preflight(run, **options)
        learn_chat_format(run.tokenizer())  # refuse an untranslatable template before converting

    def export(self, run_dir: Path, out_dir: Path, quantize: str | None = None, lora: bool = False,
               **options: Any) -> ExportResult:
        from tuneforge.export.run import open_run

        run = open_run(run_dir)
        self.preflight(run, lora=lora)
        if lora:
            result = self._export_lora(run, out_dir, self.resolve_quantization(quantize))
        else:
            result = super().export(run_dir, out_dir, quantize=quantize, **options)
        chat = learn_chat_format(run.tokenizer())
        text = modelfile(chat, result.details["gguf"], adapter=result.details.get("adapter"))
        (out_dir / "Modelfile").write_text(text, encoding="utf-8")
        result.files.append(out_dir / "Modelfile")
        result.details.update(template=chat.go_template(), system=chat.default_system, stops=chat.stops)
        return result

    def _export_lora(self, run: Any, out_dir: Path, quantization: str) -> ExportResult:
        import tempfile

        from tuneforge.export import llama_cpp as tools
        from tuneforge.export.gguf import gguf_name

        base = out_dir / gguf_name("base", quantization)
        if quantization in tools.FLOAT_TYPES:
            details = tools.convert_model(run.base_dir(), base, quantization)
        else:
            with tempfile.TemporaryDirectory(prefix="tuneforge-gguf-", dir=out_dir.parent) as scratch:
                floats = Path(scratch) / "base-f32.gguf"
                details = tools.convert_model(run.base_dir(), floats, "f32")
                tools.quantize(floats, base, quantization)
        adapter = out_dir / gguf_name("adapter", "f16")
        tools.convert_lora(run.weights_dir, run.base_dir(), adapter, "f16")
        details.update(gguf=base.name, adapter=adapter.name, base_model=run.base_model, llama_cpp_python=tools.LLAMA_CPP_PYTHON)
        return ExportResult(out_dir=out_dir, files=[base, adapter], details=details)

    def check(self, run_dir: Path, out_dir: Path, **options: Any) -> ExportCheck:
        from tuneforge.export import llama_cpp as tools
        from tuneforge.export.parity import check_against_run
        from tuneforge.export.run import open_run

        modelfile_path = out_dir / "Modelfile"
        if not modelfile_path.is_file():
            return ExportCheck(passed=False, problems=[f"{modelfile_path} is missing; export again without --check-only"])
        parts = read_modelfile(modelfile_path)
        if not parts["from"] or not (out_dir / parts["from"]).is_file():
            return ExportCheck(passed=False, problems=[f"the Modelfile's FROM ./{parts['from']} is not in {out_dir}"])
        adapter = out_dir / parts["adapter"] if parts["adapter"] else None
        check = check_against_run(run_dir, lambda trained, tokenizer: tools.GGUFModel(out_dir / parts["from"], lora_path=adapter),
                                  **options)
        problems = check_modelfile(modelfile_path, open_run(run_dir).tokenizer())
        check.details["modelfile"] = {"golden_conversations": len(GOLDEN_CONVERSATIONS), "problems": problems,
                                      "from": parts["from"], "adapter": parts["adapter"], "stops": parts["stops"]}
        if problems:
            check.passed = False
            check.problems += problems
            if check.details.get("parity"):
                check.details["parity"]["likely_cause"] = "template: " + problems[0]
        return check


EXPORTERS.register("ollama", OllamaExporter())
