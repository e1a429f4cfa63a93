"""Session settings: read from the server config when it has them, else these defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.storage.keys import sealing_key_of
from server.storage.sealed import StorageKey


@dataclass
class SessionSettings:
    #: Record every tunnel stream to ``recordings_dir/{session_id}.hlrec`` (+ ``.json`` metadata).
    record: bool = False
    recordings_dir: Path = Path("recordings")
    #: Messages buffered per direction in the relay before the reader waits (backpressure).
    relay_queue_messages: int = 16
    #: Largest tunnel message the relay accepts (a screen update is at most 8 MiB).
    max_message_bytes: int = 8 * 1024 * 1024 + 64
    #: A consented session's other side must arrive within this many seconds.
    pair_timeout_s: float = 60.0
    #: A streaming session with no technician input and no screen change for this long ends
    #: (reason "idle timeout"); 0 turns it off. Config ``session_idle_timeout_s``.
    idle_timeout_s: float = 900.0
    #: Pixels one screen update must change to count as activity: a blinking caret, a ticking
    #: clock or the session indicator's own timer must not keep an abandoned session alive.
    idle_min_change_px: int = 64 * 64 * 6
    #: A remote shell with no byte either way for this long is hung up by the relay (``shell.close {idle}``);
    #: 0 turns it off. Config ``shell_idle_timeout_s``; the device's policy has its own, the shorter wins.
    shell_idle_timeout_s: float = 900.0
    #: Largest file the in-session toolkit may move either way (config ``session_max_file_mb``): the relay
    #: refuses a bigger ``file.offer`` or ``file.start`` itself, whatever the device's policy allows.
    max_file_bytes: int = 1024 * 1024 * 1024
    #: Recordings and casts are sealed with this key (server/storage); None writes them in the clear.
    seal_key: StorageKey | None = None

    @classmethod
    def from_config(cls, config: Any) -> SessionSettings:
        data_dir = Path(getattr(config, "data_dir", "."))
        return cls(
            record=bool(getattr(config, "session_recording", False)),
            recordings_dir=Path(getattr(config, "recordings_dir", None) or data_dir / "recordings"),
            idle_timeout_s=float(getattr(config, "session_idle_timeout_s", 900.0)),
            shell_idle_timeout_s=float(getattr(config, "shell_idle_timeout_s", 900.0)),
            max_file_bytes=int(getattr(config, "session_max_file_mb", 1024)) * 1024 * 1024,
            seal_key=sealing_key_of(config) if hasattr(config, "data_dir") else None,
        )
