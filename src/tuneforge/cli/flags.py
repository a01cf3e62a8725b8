"""Flag types shared by every command: values are checked by argparse, with the config's own rules.

A numeric flag that is also a ``FineTuningConfig`` field (``--batch-size``, ``--max-length``,
``--epochs`` ...) is parsed with that field's type and limits (``config_value("batch_size")``), so
``tuneforge eval --batch-size 0`` is refused exactly as ``batch_size: 0`` in a config file is, and
the limits live in one place. Flags of other commands use ``bounded(int, ge=0)`` and the like. A bad
value is wrong usage: argparse prints the usage line and ``argument --flag: what is wrong``, exit 2.
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from typing import Annotated, Any, Callable, Union, get_args

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError

FORMAT_HELP = "row format (default: auto-detected from the columns)"


def config_value(name: str) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses a flag's text as ``FineTuningConfig.<name>`` (its type and limits)."""
    from tuneforge.config import Auto, FineTuningConfig

    field = FineTuningConfig.model_fields[name]
    # A field that defaults to auto (chosen from a run's data) takes a plain number in the commands outside a run.
    kinds = tuple(arg for arg in get_args(field.annotation) if arg != Auto) if get_args(field.annotation) else ()
    annotation = (Union[kinds] if len(kinds) > 1 else kinds[0]) if kinds and Auto in get_args(field.annotation) else field.annotation
    return _checker(Annotated[(annotation, *field.metadata)] if field.metadata else annotation, name)


def bounded(kind: type, **limits: Any) -> Callable[[str], Any]:
    """An argparse ``type=`` for a flag outside the config: ``kind`` with pydantic limits (``ge``, ``gt``, ``le``, ``lt``)."""
    return _checker(Annotated[kind, Field(**limits)], kind.__name__)


def _checker(annotation: Any, name: str) -> Callable[[str], Any]:
    adapter = _adapter(annotation)

    def parse(text: str) -> Any:
        try:
            return adapter.validate_python(text)
        except ValidationError as error:
            message = error.errors()[0]["msg"].replace("Input should be", "must be")
            raise argparse.ArgumentTypeError(f"{message} (got {text!r})") from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


@lru_cache(maxsize=None)
def _adapter(annotation: Any) -> TypeAdapter:
    return TypeAdapter(annotation, config=ConfigDict(allow_inf_nan=False))


def data_format_choices() -> list[str]:
    """The row formats a flag accepts: ``auto`` and every registered format (data/row_formats/)."""
    from tuneforge.data.row_formats import AUTO, format_names

    return [AUTO, *format_names()]


def add_format_flags(parser: argparse.ArgumentParser) -> None:
    """``--data-format`` (alias ``--format``, its old name in validate/prepare) and ``--text-template``."""
    choices = data_format_choices()
    parser.add_argument("--data-format", "--format", dest="data_format", default="auto", type=data_format,
                        metavar="FORMAT", help=FORMAT_HELP + "; one of: " + ", ".join(choices)
                        + ", or a plug-in as module:attribute")
    parser.add_argument("--text-template", metavar="TEMPLATE", type=text_template,
                        help="use any columns, e.g. '{question}\\n{answer}' (every token is trained)")


def data_format(text: str) -> str:
    """An argparse ``type=`` for ``--data-format``: auto, a registered row format, or a ``module:attribute`` plug-in."""
    from tuneforge.core.registries import ROW_FORMATS

    problem = ROW_FORMATS.problem(text, "--data-format") if text != "auto" else None
    if problem:
        raise argparse.ArgumentTypeError(problem.removeprefix("--data-format: "))
    return text


def text_template(text: str) -> str:
    """An argparse ``type=`` for ``--text-template``: the config's own template check."""
    from tuneforge.config import template_problem

    problem = template_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(f"{problem} (got {text!r})")
    return text


def metric_names(text: str) -> list[str]:
    """``--evaluation-metrics a,b``: the names, each checked against the metric registry as the config checks them."""
    from tuneforge.core.registries import METRICS

    names = [name.strip() for name in text.split(",") if name.strip()]
    problems = [problem for name in names if (problem := METRICS.problem(name, "evaluation_metrics"))]
    if problems or not names:
        raise argparse.ArgumentTypeError("; ".join(problems) or "name at least one metric")
    return names


def model_flags(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--adapter``: the model a command loads (``eval``, ``chat``)."""
    parser.add_argument("--model", default=None, help="base model (default: the run's base, else smollm2-135m-instruct)")
    parser.add_argument("--adapter", metavar="RUN_DIR", default=None, help="a tuneforge run directory or a PEFT adapter directory")
