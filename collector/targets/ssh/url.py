"""SSH destinations: ``ssh://user@host[:port]/absolute/path``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ...errors import CollectorError

DEFAULT_PORT = 22


@dataclass(frozen=True)
class SshUrl:
    user: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, dest: str) -> SshUrl:
        parts = urlsplit(dest)
        try:
            port = parts.port or DEFAULT_PORT
        except ValueError:
            raise CollectorError(f"{dest}: bad port") from None
        if parts.scheme != "ssh" or not parts.username or not parts.hostname or not parts.path.startswith("/"):
            raise CollectorError(f"{dest}: SSH destinations look like ssh://user@host[:port]/absolute/path")
        return cls(unquote(parts.username), parts.hostname, port, unquote(parts.path))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}{'' if self.port == DEFAULT_PORT else f':{self.port}'}{self.path}"
