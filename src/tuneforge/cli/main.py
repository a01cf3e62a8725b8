"""``tuneforge``: the command line. Each command parses its flags, calls one library function and renders.

Exit codes: 0 success, 1 the input or the run failed (a clear message, no traceback), 2 wrong usage,
75 training stopped by SIGINT/SIGTERM after saving a checkpoint (continue with ``tuneforge resume``),
130 stopped at once (a second signal, or a signal outside training).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from tuneforge.cli.chat_command import add_chat_command, cmd_chat
from tuneforge.cli.config_flags import config_overrides as _config_overrides
from tuneforge.cli.eval_command import add_eval_command, cmd_eval
from tuneforge.cli.help_text import DATA_HELP, EXAMPLES, EXIT_CODES, EXIT_STOPPED_BY_SIGNAL
from tuneforge.cli.run_commands import add_monitor_command, add_report_command, cmd_monitor, cmd_report
from tuneforge.cli.train_commands import (add_demo_command, add_finetune_command, add_resume_command, cmd_demo, cmd_finetune,
                                          cmd_resume)
from tuneforge.cli.train_commands import without_nproc as _without_nproc

# Where each command is: data_commands (validate, prepare, ...), train_commands (finetune, resume, demo),
# eval_command, chat_command, run_commands (report, monitor), and one module per other command; the
# handlers stay importable from here.
__all__ = ["DATA_HELP", "EXAMPLES", "EXIT_CODES", "EXIT_STOPPED_BY_SIGNAL", "build_parser", "cmd_chat", "cmd_demo",
           "cmd_eval", "cmd_finetune", "cmd_monitor", "cmd_report", "cmd_resume", "main", "_config_overrides",
           "_without_nproc"]


def _quiet_libraries() -> None:
    """Keep third-party progress bars and advice off the user's terminal; tuneforge reports itself."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # GGUF conversion and weight-loading bars use tqdm directly
    import warnings

    warnings.filterwarnings("ignore")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tuneforge",
        description="Fine-tune pre-trained language models on your own examples, on your own machine.",
        epilog=EXAMPLES + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an unexpected error "
                        "(otherwise it goes to RUN_DIR/error.log or $TUNEFORGE_HOME/logs/)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from tuneforge.cli.data_commands import add_data_commands
    add_data_commands(commands)
    from tuneforge.cli.serve_command import add_serve_command
    add_serve_command(commands)
    from tuneforge.cli.adapters_commands import add_adapters_commands
    add_adapters_commands(commands)
    from tuneforge.cli.export_command import add_export_command
    add_export_command(commands)
    from tuneforge.cli.jobs_commands import add_jobs_commands
    add_jobs_commands(commands)
    from tuneforge.cli.compare_command import add_compare_command
    add_compare_command(commands)
    from tuneforge.cli.search_command import add_search_command
    add_search_command(commands)

    add_finetune_command(commands)
    add_eval_command(commands)
    add_chat_command(commands)
    add_report_command(commands)
    add_resume_command(commands)
    add_monitor_command(commands)
    add_demo_command(commands)
    for command in commands.choices.values():  # --debug also after the command name
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def _version() -> str:
    from tuneforge.core.version import __version__

    return f"tuneforge {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``tuneforge`` command.

    No error reaches the user as a Python traceback: a ``TuneforgeError`` prints its message; any
    other exception prints what failed and what to try, and its traceback goes to the run
    directory's ``error.log`` (or ``$TUNEFORGE_HOME/logs/``), or to the terminal with ``--debug``.
    """
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # --nproc starts this very command in N processes
    if argv is None:  # the `tuneforge` command itself (not a call from Python): train under tcmalloc when installed
        from tuneforge.core.allocator import reexec_with_allocator

        reexec_with_allocator(args.argv, getattr(args, "command", None))
    from tuneforge.core.errors import TuneforgeError

    handler: Callable[[argparse.Namespace], int] = args.handler
    debug = bool(getattr(args, "debug", False)) or os.environ.get("TUNEFORGE_DEBUG", "") not in ("", "0")
    try:
        return handler(args)
    except TuneforgeError as error:
        if debug:
            traceback.print_exc()
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopped at once. A run directory keeps its last complete checkpoint; "
              "continue it with: tuneforge resume RUN_DIR", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (`tuneforge monitor --json | head`): not an error of ours
        try:  # Python's recipe: point stdout at devnull so the flush at exit does not fail again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured): nothing to redirect
            pass
        return 1
    except Exception as error:  # a bug, out of memory, a broken install: a message, the traceback in a log
        return _unexpected_failure(error, args.command, debug)


def _unexpected_failure(error: Exception, command: str, debug: bool) -> int:
    """Print one message for an exception nobody foresaw; keep its traceback where ``--debug`` or a log shows it."""
    from tuneforge.core.failures import describe_failure, is_out_of_memory, logged_at, write_error_log

    message = describe_failure(error, f"tuneforge {command}")
    if debug:
        traceback.print_exc()
        where = "the traceback is above"
    else:
        log = logged_at(error) or write_error_log(error)
        where = f"the full traceback is in {log}" if log else "run again with --debug to see the traceback"
    advice = "" if is_out_of_memory(error) else (
        "; if it happens again, run with --debug and report it with the traceback")
    print(f"error: {message}\n  {where}{advice}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
