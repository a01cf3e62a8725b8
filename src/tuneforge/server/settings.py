"""What ``tuneforge serve`` runs with (``ServerSettings``), and where its API key comes from.

Security defaults: the server binds 127.0.0.1; every request needs ``Authorization: Bearer <key>``.
The key is, in this order: ``ServerSettings.api_key`` (given in code), the first line of
``--api-key-file``, ``$TUNEFORGE_API_KEY``, the key generated earlier into
``$TUNEFORGE_HOME/api_key``, or a new one generated there (mode 0600) and announced once. Binding a
non-loopback address without an explicit key (the first three) is refused: a key written to a
file on first start would let a server reachable from the network come up unnoticed.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tuneforge.core.errors import TuneforgeError
from tuneforge.core.paths import tuneforge_home

API_KEY_ENV = "TUNEFORGE_API_KEY"
API_KEY_FILE_NAME = "api_key"
MIN_KEY_LENGTH = 16
DEFAULT_MODEL = "smollm2-135m-instruct"


class ServerConfigError(TuneforgeError):
    """The server cannot start as asked (an unsafe bind, an unreadable key file, a bad limit)."""


@dataclass
class ServerSettings:
    """Everything ``create_app`` and ``serve`` need. Defaults are the safe ones.

    ``models`` are the base models served (names, directories or .gguf files, as ``--model``
    takes them); the first is the default for fine-tuning jobs. The request queue gathers
    requests that arrive within ``batch_gap_ms`` of each other, for at most ``batch_window_ms``,
    into one batch; ``max_batch`` caps a batch;
    ``max_loaded_adapters`` is the LRU size of adapters kept on the base model;
    ``max_tokens_limit`` caps every answer (the context window caps it too).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    models: list[str] = field(default_factory=lambda: [DEFAULT_MODEL])
    api_key: str | None = None
    api_key_file: Path | None = None
    max_upload_mb: float = 512
    database_url: str | None = None
    worker: bool = True
    home: Path | None = None
    batch_window_ms: float = 20.0
    batch_gap_ms: float = 1.0
    max_batch: int = 16
    max_loaded_adapters: int = 8
    default_max_tokens: int = 256
    max_tokens_limit: int = 4096  # the most tokens one answer may have, whatever a request asks
    device: str | None = None
    dashboard: bool = True  # the web dashboard at / (log in with the API key; server/dashboard/)

    @property
    def home_dir(self) -> Path:
        return Path(self.home) if self.home else tuneforge_home()

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def problems(self) -> list[str]:
        """What is wrong with these settings, one sentence each."""
        found = []
        if not 0 <= self.port <= 65535:
            found.append(f"--port must be 0-65535 (got {self.port})")
        if not self.max_upload_mb > 0:
            found.append(f"--max-upload-mb must be above 0 (got {self.max_upload_mb})")
        if not self.models:
            found.append("give at least one --model to serve")
        if self.max_batch < 1 or self.max_loaded_adapters < 1:
            found.append("max_batch and max_loaded_adapters must be at least 1")
        if not 0 <= self.batch_window_ms <= 1000 or not 0 <= self.batch_gap_ms <= 1000:
            found.append(f"batch_window_ms and batch_gap_ms must be 0-1000 (got {self.batch_window_ms}, {self.batch_gap_ms})")
        return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from this machine (127.0.0.0/8, ::1, localhost)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def resolve_api_key(settings: ServerSettings, announce: Callable[[str], None] = print) -> str:
    """The key every request must present (see the module docstring for the order).

    Raises ``ServerConfigError`` for a non-loopback ``host`` without an explicit key, and for a key
    file that is missing, empty or too short.
    """
    explicit = _explicit_key(settings)
    if explicit is not None:
        return explicit
    if not is_loopback(settings.host):
        raise ServerConfigError(
            f"refusing to listen on {settings.host} (reachable from other machines) with a generated API key: "
            f"set {API_KEY_ENV} or pass --api-key-file FILE, and give the key to the clients you trust"
        )
    path = settings.home_dir / API_KEY_FILE_NAME
    if path.is_file():
        return _read_key(path)
    key = "tf-" + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # never readable by others, even for an instant
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")
    announce(f"generated an API key (stored in {path}, readable only by you); clients send it as "
             f"'Authorization: Bearer {key}'")
    return key


def _explicit_key(settings: ServerSettings) -> str | None:
    if settings.api_key:
        return _checked(settings.api_key, "ServerSettings.api_key")
    if settings.api_key_file:
        return _read_key(Path(settings.api_key_file))
    env = os.environ.get(API_KEY_ENV, "").strip()
    if env:
        return _checked(env, f"${API_KEY_ENV}")
    return None


def _read_key(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ServerConfigError(f"cannot read the API key file {path}: {error.strerror or error}") from None
    lines = text.strip().splitlines()
    return _checked(lines[0].strip() if lines else "", str(path))


def _checked(key: str, source: str) -> str:
    if len(key) < MIN_KEY_LENGTH or any(ch.isspace() for ch in key) or not key.isprintable():
        raise ServerConfigError(f"the API key from {source} must be at least {MIN_KEY_LENGTH} printable characters "
                                "without spaces; generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return key
