"""The toolkit from ``helpline viewer`` (``--say``, ``--send``, ``--fetch``, ``--paste``, ``--clipboard``): scripted.

Connects the reference viewer, waits for the device's ``toolkit.caps``, then does each step in the
order given and prints one line per result (a JSON object with ``--json``): a chat line sent, a
file saved on the device (name, size, SHA-256), a file fetched (where, size, SHA-256 checked),
a paste. With ``--clipboard`` it then prints the device's clipboard each time it changes until
``--seconds`` pass (or the stream ends). Exit status 1 when any step was refused.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from agent.viewer import Viewer
from protocol import toolkit as tk

#: How long the device may take to say what the session may do.
CAPS_TIMEOUT_S = 30.0
#: How long one file may take either way.
FILE_TIMEOUT_S = 3600.0


@dataclass
class Steps:
    say: list[str] = field(default_factory=list)
    send: list[Path] = field(default_factory=list)
    fetch: list[str] = field(default_factory=list)
    fetch_dir: Path = Path(".")
    paste: str | None = None
    clipboard: bool = False

    def any(self) -> bool:
        return bool(self.say or self.send or self.fetch or self.paste is not None or self.clipboard)


def _line(out: TextIO, as_json: bool, **fields: object) -> None:
    if as_json:
        print(json.dumps(fields), file=out, flush=True)
    else:
        print(" ".join(f"{k}={v}" for k, v in fields.items()), file=out, flush=True)


async def run_steps(url: str, steps: Steps, *, ssl_context: ssl.SSLContext | None, headers: Mapping[str, str],
                    seconds: float, as_json: bool, out: TextIO = sys.stdout) -> int:
    """Do ``steps`` on the session at ``url``; 0 when every one succeeded, else 1."""
    failed = 0
    async with Viewer(url, ssl_context=ssl_context, headers=headers) as viewer:
        await viewer.wait_for(lambda v: v.caps is not None, CAPS_TIMEOUT_S)
        assert viewer.caps is not None
        _line(out, as_json, step="caps", allowed=",".join(viewer.caps.allowed) or "-",
              max_file_bytes=viewer.caps.max_file_bytes)
        for text in steps.say:
            await viewer.say(text)
            _line(out, as_json, step="say", chars=len(text))
        for path in steps.send:
            result = await viewer.send_file(str(path), timeout=FILE_TIMEOUT_S)
            if isinstance(result, tk.FileDone):
                _line(out, as_json, step="send", file=str(path), saved_as=result.name, size=result.size,
                      sha256=result.sha256)
            else:
                failed += 1
                _line(out, as_json, step="send", file=str(path), error=result.code if result else "interrupted",
                      message=result.message if result else "")
        if steps.fetch:
            await asyncio.to_thread(steps.fetch_dir.mkdir, parents=True, exist_ok=True)
        for remote in steps.fetch:
            dest = steps.fetch_dir / (Path(remote).name or "fetched")
            fetched = await viewer.fetch_file(remote, str(dest), timeout=FILE_TIMEOUT_S)
            if isinstance(fetched, tk.FileEnd):
                _line(out, as_json, step="fetch", file=remote, saved_to=str(dest), size=fetched.size,
                      sha256=fetched.sha256)
            else:
                failed += 1
                dest.unlink(missing_ok=True)
                _line(out, as_json, step="fetch", file=remote, error=fetched.code, message=fetched.message)
        if steps.paste is not None or steps.clipboard:
            await viewer.sync_clipboard(to_device=steps.paste is not None, from_device=steps.clipboard)
            try:
                await viewer.wait_for(lambda v: v.clip_sync is not None, CAPS_TIMEOUT_S)
            except (TimeoutError, ConnectionError):
                failed += 1
                refused = [e for e in viewer.stats.errors if e.code == "clipboard_refused"]
                _line(out, as_json, step="clipboard", error="clipboard_refused",
                      message=refused[-1].message if refused else "no answer")
            else:
                if steps.paste is not None:
                    await viewer.paste(steps.paste)
                    _line(out, as_json, step="paste", chars=len(steps.paste))
                if steps.clipboard:
                    failed += await _watch_clipboard(viewer, seconds, as_json, out)
    return 1 if failed else 0


async def _watch_clipboard(viewer: Viewer, seconds: float, as_json: bool, out: TextIO) -> int:
    seen = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds if seconds else None
    while not viewer.closed.is_set():
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            break
        def more(v: Viewer, n: int = seen) -> bool:
            return len(v.clipboard) > n

        try:
            await viewer.wait_for(more, left if left is not None else 3600.0)
        except (TimeoutError, ConnectionError):
            continue
        for text in viewer.clipboard[seen:]:
            _line(out, as_json, step="clipboard", text=text)
        seen = len(viewer.clipboard)
    return 0
