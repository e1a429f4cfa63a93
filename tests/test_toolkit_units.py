"""The toolkit without a network: the message codec (fuzzed), the Downloads writer, fetch rules, resume."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.policy import LocalPolicy, PolicyError
from agent.toolkit.caps import ToolkitCaps, decide_caps
from agent.toolkit.inbox import InboxRefused, open_folder
from agent.toolkit.outbox import FetchRefused, covered, resolve
from agent.toolkit.session import CHUNK, Toolkit
from protocol import toolkit as tk


@given(st.binary(max_size=300))
def test_chunk_decoder_raises_only_its_error(data: bytes) -> None:
    """Any bytes decode to a chunk or raise ToolkitProtocolError, nothing else."""
    try:
        tk.unpack_chunk(data)
    except tk.ToolkitProtocolError:
        pass


@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_text_decoder_raises_only_its_error(data: str | bytes) -> None:
    """Any text decodes to a toolkit message or raises ToolkitProtocolError, nothing else."""
    try:
        tk.decode_text(data)
    except tk.ToolkitProtocolError:
        pass


def test_chunk_round_trip_and_limits() -> None:
    """A chunk survives packing; empty, oversize and zero-numbered ones are refused both ways."""
    assert tk.unpack_chunk(tk.pack_chunk(7, 1024, b"abc")) == tk.Chunk(7, 1024, b"abc")
    for bad in ((7, 0, b""), (0, 0, b"a"), (7, 0, b"a" * (tk.MAX_CHUNK + 1))):
        with pytest.raises(tk.ToolkitProtocolError):
            tk.pack_chunk(*bad)
    with pytest.raises(tk.ToolkitProtocolError):
        tk.decode_text('{"type":"chat.send","text":"a\\u0000b"}')


def test_policy_keys_and_grant_decide_caps() -> None:
    """Policy switches remove a capability; a grant that does not name files/clipboard removes those too."""
    policy = LocalPolicy.parse("allow_clipboard = false\nmax_file_mb = 5\n")
    caps = decide_caps(policy, None)
    assert caps.listed() == ["chat", "files"] and caps.max_file_bytes == 5 * 1024 * 1024
    with pytest.raises(PolicyError):
        LocalPolicy.parse("max_file_mb = 0\n")
    with pytest.raises(PolicyError):
        LocalPolicy.parse("allow_files = 3\n")
    assert LocalPolicy.parse("").allow_files


def test_fetch_paths() -> None:
    """Relative, '..' and symlinked paths are refused; grant patterns match per component."""
    home = Path("/home/u")
    with pytest.raises(FetchRefused):
        resolve("etc/passwd", home)
    with pytest.raises(FetchRefused):
        resolve("~/Downloads/../.ssh/id_ed25519", home)
    assert covered("/var/log/app/a.log", ("/var/log/app/*.log",), home)
    assert not covered("/var/log/app/sub/a.log", ("/var/log/app/*.log",), home)
    assert covered("/home/u/Downloads/x/y.txt", ("~/Downloads",), home)
    assert not covered("/home/u/.bashrc", ("~/Downloads",), home)


def test_symlinked_downloads_is_refused(tmp_path: Path) -> None:
    """A Downloads that is a symlink is never written through."""
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "Downloads").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InboxRefused) as caught:
        open_folder(tmp_path / "Downloads")
    assert caught.value.code == "folder_unsafe"


class _Pipe:
    """Collects what the toolkit sends."""

    def __init__(self) -> None:
        self.texts: list[tk.ToolkitAny] = []
        self.chunks: list[tk.Chunk] = []

    async def text(self, data: str) -> None:
        self.texts.append(tk.decode_text(data))

    async def binary(self, data: bytes) -> None:
        self.chunks.append(tk.unpack_chunk(data))


async def test_resume_sends_at_most_one_chunk_again_and_fetch_matches(tmp_path: Path) -> None:
    """A transfer cut after 3 chunks resumes at the acknowledged offset; the fetched copy hashes the same."""
    data = os.urandom(CHUNK * 5 + 99)
    digest = hashlib.sha256(data).hexdigest()
    pipe = _Pipe()
    caps = ToolkitCaps(frozenset({"files"}), 10 * 1024 * 1024, fetch_paths=(str(tmp_path / "Downloads"),),
                       unattended=True)
    toolkit = Toolkit(caps, pipe.text, pipe.binary, folder=tmp_path / "Downloads", home=tmp_path)
    await toolkit.on_text(tk.FileOffer(transfer=1, name="big.bin", size=len(data), sha256=digest))
    for offset in range(0, 3 * CHUNK, CHUNK):
        await toolkit.on_binary(tk.pack_chunk(1, offset, data[offset:offset + CHUNK]))
    await toolkit.close()  # the tunnel dropped
    pipe2 = _Pipe()
    toolkit = Toolkit(caps, pipe2.text, pipe2.binary, folder=tmp_path / "Downloads", home=tmp_path)
    await toolkit.on_text(tk.FileOffer(transfer=3, name="big.bin", size=len(data), sha256=digest))
    accept = pipe2.texts[0]
    assert isinstance(accept, tk.FileAccept) and accept.offset == 3 * CHUNK
    for offset in range(accept.offset, len(data), CHUNK):
        await toolkit.on_binary(tk.pack_chunk(3, offset, data[offset:offset + CHUNK]))
    done = pipe2.texts[-1]
    assert isinstance(done, tk.FileDone) and done.sha256 == digest
    assert (tmp_path / "Downloads" / "big.bin").read_bytes() == data
    assert [p.name for p in (tmp_path / "Downloads").iterdir()] == ["big.bin"]

    await toolkit.on_text(tk.FileFetch(transfer=5, path=str(tmp_path / "Downloads" / "big.bin")))
    async with asyncio.timeout(10):
        while not any(isinstance(m, tk.FileEnd) for m in pipe2.texts):
            for chunk in list(pipe2.chunks):
                await toolkit.on_text(tk.FileAck(transfer=5, offset=chunk.offset + len(chunk.data)))
            await asyncio.sleep(0.01)
    got = b"".join(c.data for c in sorted(pipe2.chunks, key=lambda c: c.offset))
    end = next(m for m in pipe2.texts if isinstance(m, tk.FileEnd))
    assert got == data and end.sha256 == digest
    await toolkit.on_text(tk.FileFetch(transfer=7, path=str(tmp_path / "secret.txt")))
    refused = pipe2.texts[-1]
    assert isinstance(refused, tk.FileError) and refused.code == "not_granted"
    await toolkit.close()


def test_prompt_and_indicator_list_the_capabilities() -> None:
    """The consent prompt names what the session may also do, minus what the local policy switched off."""
    from agent.consent.decision import ConsentRequest, Verdict, decide
    from agent.consent.tk_app import capability_line

    request = ConsentRequest(session_id="s1", technician="Ann", technician_user="ann", technician_role="", mode="view")
    decision = decide(request, LocalPolicy.parse("allow_files = false\n"), document=None, nobody_to_ask="")
    assert decision.verdict is Verdict.ASK_USER and decision.prompt is not None
    assert decision.prompt.capabilities == ("chat", "clipboard")
    assert capability_line(list(decision.prompt.capabilities)) == "chat with you, share the clipboard"
    assert capability_line(["files", "<b>", 3]) == "send and receive files"


async def test_recordings_keep_no_file_bytes_and_no_clipboard_text(tmp_path: Path) -> None:
    """The relay's recorder drops the device's file chunks and clipboard text (screen updates and chat stay)."""
    from server.sessions.relay import Recorder

    recorder = Recorder(tmp_path / "rec" / "s1.hlrec", {"session_id": "s1"})
    recorder.add(0, True, tk.pack_chunk(1, 0, b"SECRET-FILE-BYTES"))
    recorder.add(0, False, tk.encode_text(tk.ClipSet(text="SECRET-CLIPBOARD")))
    recorder.add(0, False, tk.encode_text(tk.ChatMessage(seq=0, sender="user", text="hello", at=1.0)))
    recorder.add(1, True, tk.pack_chunk(3, 0, b"SECRET-UPLOAD"))
    await recorder.close({})
    data = (tmp_path / "rec" / "s1.hlrec").read_bytes()
    assert b"SECRET" not in data and b"hello" in data
