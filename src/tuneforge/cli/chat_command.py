"""``tuneforge chat``: talk to a base model or a trained run, once (``--prompt``) or interactively."""

from __future__ import annotations

import argparse

from tuneforge.cli.flags import config_value, model_flags


def add_chat_command(commands: argparse._SubParsersAction) -> None:
    """``tuneforge chat``: ``--adapter``/``--model``, ``--prompt``, ``--system``."""
    chat = commands.add_parser(
        "chat", help="talk to a base model or a trained run",
        description="Greedy chat with a model. With --prompt, answer once and exit; otherwise an interactive "
        "session (an empty line or Ctrl-D ends it).",
    )
    model_flags(chat)
    chat.add_argument("--prompt", help="answer this one message and exit")
    chat.add_argument("--system", help="a system message to start the conversation with")
    chat.add_argument("--max-new-tokens", type=config_value("max_new_tokens"), default=256, metavar="N",
                      help="answer length limit (default: 256)")
    chat.set_defaults(handler=cmd_chat)


def cmd_chat(args: argparse.Namespace) -> int:
    from tuneforge.cli import render
    from tuneforge.evaluate.chat import ChatSession
    from tuneforge.runs import load_trained

    model, tokenizer, description = load_trained(args.adapter, args.model)
    session = ChatSession(model, tokenizer, system=args.system, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        print(session.reply(args.prompt))
        return 0
    render.note(f"chatting with {description}; an empty line or Ctrl-D ends")
    while True:
        try:
            message = input("you> ")
        except EOFError:
            break
        if not message.strip():
            break
        print(f"model> {session.reply(message)}")
    return 0
