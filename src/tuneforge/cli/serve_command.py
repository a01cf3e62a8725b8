"""``tuneforge serve``: the OpenAI-compatible server (HTTP + a job worker), parsed here and run by ``tuneforge.server.serve``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

SERVE_EXAMPLES = """\
examples:
  tuneforge serve                                   127.0.0.1:8000, the embedded SmolLM2-135M-Instruct, a job worker
  tuneforge serve --model smollm2-135m-instruct --model mine=/models/my-base
  TUNEFORGE_API_KEY=... tuneforge serve --host 0.0.0.0   other machines may connect (an explicit key is required)
  tuneforge serve --no-worker --database-url postgresql://user@db/tuneforge   HTTP only; `tuneforge worker`s train

then, from Python:
  from openai import OpenAI
  client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=open(KEY_FILE).read().strip())

security: every request needs 'Authorization: Bearer <key>'. The key is $TUNEFORGE_API_KEY, the first line of
--api-key-file, or one generated on first start into $TUNEFORGE_HOME/api_key (mode 0600, printed once).

dashboard: open http://127.0.0.1:8000/ in a browser and log in with the same key (--no-dashboard: API only).
"""


def add_serve_command(subparsers: Any) -> None:
    """Register ``serve`` on the ``tuneforge`` sub-command parser."""
    from tuneforge.cli.flags import bounded

    serve = subparsers.add_parser(
        "serve", help="the OpenAI-compatible server: files, fine-tuning jobs, models, chat completions",
        description="Serve OpenAI's fine-tuning and chat completions API under /v1 on this machine: upload a file, "
        "create a job, follow it, then chat with the fine-tuned model by name, from the openai SDK or curl.",
        epilog=SERVE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only; "
                       "any other address needs an explicit key)")
    serve.add_argument("--port", type=bounded(int, ge=0, le=65535), default=8000, help="port (default: 8000)")
    serve.add_argument("--model", action="append", metavar="BASE", dest="models",
                       help="a base model to serve and fine-tune: a name, a directory, a .gguf file, or NAME=SPEC "
                       "(repeat for several; default: smollm2-135m-instruct)")
    serve.add_argument("--api-key-file", type=Path, metavar="FILE", help="read the API key from the first line of FILE")
    serve.add_argument("--max-upload-mb", type=bounded(float, gt=0), default=512, metavar="N",
                       help="largest request body, file uploads included (default: 512)")
    serve.add_argument("--database-url", metavar="URL", help="the job store (default: $TUNEFORGE_DATABASE_URL, else "
                       "SQLite in $TUNEFORGE_HOME); "
                       "postgresql://... lets workers on several machines share one queue")
    serve.add_argument("--no-worker", dest="worker", action="store_false",
                       help="do not train in this process (run `tuneforge worker` elsewhere)")
    serve.add_argument("--no-dashboard", dest="dashboard", action="store_false",
                       help="do not serve the web dashboard at / (the API under /v1 only)")
    serve.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from tuneforge.server.settings import DEFAULT_MODEL, ServerSettings
    from tuneforge.server import serve

    settings = ServerSettings(host=args.host, port=args.port, models=args.models or [DEFAULT_MODEL],
                              api_key_file=args.api_key_file, max_upload_mb=args.max_upload_mb,
                              database_url=args.database_url or os.environ.get("TUNEFORGE_DATABASE_URL") or None, worker=args.worker,
                              dashboard=args.dashboard)
    serve(settings)
    return 0
