"""XWayland under GNOME/Wayland (issue 14): the in-session toolkit (chat, a clipboard native apps share) and input.

Real parts: a server, the agent on the test's headless Mutter (the session type is Wayland; the Tk prompt and
indicator are on its XWayland, answered with an xdotool click), the reference viewer as the technician, and
wl-clipboard's ``wl-copy`` / ``wl-paste`` as the native Wayland applications that copy and paste. The indicator
syncs the clipboard through Tk on XWayland; Mutter carries the selection between its X and Wayland sides, so a
paste from the technician is what a native app pastes, and a copy in a native app reaches the technician.

A headless Mutter's seat has no keyboard until a remote-desktop session sends a key (wl-paste: "This seat has no
keyboard"); the technician presses Shift first, as on a real desktop the seat has one.
"""

from __future__ import annotations

import ast
import asyncio
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

import pytest

from agent.config import AgentConfig
from agent.consent.tk_app import CHAT_TITLE
from agent.screen.wayland.mutter import MutterSession
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_session_helpers import (
    configure_agent,
    install_test_auth,
    start_session,
    viewer_for,
    wait_window,
    xdotool,
)
from tests.test_wayland import TIMEOUT, wayland  # noqa: F401 - fixture
from tests.wayland import MutterHandle, answer_xwayland_prompt


def native_paste(env: dict[str, str]) -> str:
    """What a native Wayland app pastes (wl-paste), or "" when nothing is offered yet."""
    done = subprocess.run(["wl-paste", "--no-newline"], env=env, capture_output=True, text=True, timeout=10,
                          check=False)
    return done.stdout if done.returncode == 0 else ""


#: BTN_LEFT (evdev) and the keysym of Return.
BTN_LEFT = 0x110
XK_RETURN = 0xFF0D


def window_place(display: str, window_id: int) -> tuple[int, int, int]:
    """Where an X window's contents are on the screen (left, top) and its height. Under a window manager that
    frames windows (Mutter on XWayland) xdotool's getwindowgeometry adds the frame's offset once more."""
    from agent.screen.xdisplay import open_display

    dpy = open_display(display)
    try:
        window = dpy.create_resource_object("window", window_id)
        origin = window.translate_coords(dpy.screen().root, 0, 0)  # the root's origin in the window
        return -origin.x, -origin.y, window.get_geometry().height
    finally:
        dpy.close()


async def type_as_the_person(display: str, text: str) -> None:
    """Click the chat window's entry line and type ``text`` + Return through the compositor's own input (a
    remote-desktop session of the test's): on Wayland that is the person's keyboard and pointer — XTEST into
    XWayland would move no focus, Mutter decides it."""
    window = int(xdotool(display, "search", "--onlyvisible", "--name", CHAT_TITLE).split()[0])
    left, top, height = window_place(display, window)
    x, y = left + 60, top + height - 30
    session = await MutterSession.open()
    try:
        await session.pointer_motion(x, y)

        def pointer_there() -> bool:  # XWayland has the pointer over its window: a click now lands there
            place = dict(line.split("=", 1) for line in xdotool(display, "getmouselocation", "--shell").split())
            return (int(place["X"]), int(place["Y"])) == (x, y)

        await wait_until(lambda: asyncio.to_thread(pointer_there), timeout=TIMEOUT, interval=0.05,
                         what="the pointer over the chat window")
        for down in (True, False):
            await session.pointer_button(BTN_LEFT, down)
        for char in text:
            await session.tap_keysym(ord(char))
        await session.tap_keysym(XK_RETURN)
    finally:
        await session.close()


async def test_chat_and_the_clipboard_work_in_a_wayland_session_and_reach_native_apps(
        tmp_path: Path, wayland: MutterHandle) -> None:  # noqa: F811
    """Chat goes both ways through the indicator's chat window (on XWayland); a paste from the technician is what a
    native Wayland app pastes, and a copy in a native app reaches the technician."""
    missing = [name for name in ("wl-copy", "wl-paste", "xdotool") if shutil.which(name) is None]
    assert not missing, f"not installed: {missing} (scripts/setup.sh installs wl-clipboard and xdotool)"
    env = {**os.environ, **wayland.env()}
    async with running_server(tmp_path / "srv") as server:
        install_test_auth(server)
        state = await enroll_agent(server, tmp_path / "agent")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(wayland.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            sid = await start_session(server, state.device_id, "control", "paste the command")
            async with viewer_for(server, sid) as viewer:
                await answer_xwayland_prompt(wayland, TIMEOUT)
                await viewer.wait_for(lambda v: v.caps is not None and v.agent_stats is not None, TIMEOUT)
                assert viewer.agent_stats is not None and viewer.agent_stats.backend == "wayland-mutter"
                assert viewer.caps is not None and "clipboard" in viewer.caps.allowed, viewer.caps
                await viewer.say("Hello, I am looking at the printer queue")
                await wait_window(wayland.display, CHAT_TITLE, timeout=TIMEOUT)
                await type_as_the_person(wayland.display, "thanks, it is the one on floor 2")
                await viewer.wait_for(lambda v: any(m.sender == "user" for m in v.chat), TIMEOUT)
                assert [m.text for m in viewer.chat if m.sender == "user"] == ["thanks, it is the one on floor 2"]

                await viewer.press_key("ShiftLeft")  # the seat's keyboard (see the module docstring)
                await viewer.sync_clipboard(to_device=True, from_device=True)
                await viewer.wait_for(lambda v: v.clip_sync is not None, 10)

                await viewer.paste("sudo systemctl restart cups")

                async def pasted() -> bool:
                    return await asyncio.to_thread(native_paste, env) == "sudo systemctl restart cups"

                await wait_until(pasted, timeout=TIMEOUT, what="the technician's paste in a native Wayland app")

                copier = subprocess.Popen(["wl-copy", "--foreground", "copied in a native app"], env=env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                try:
                    await viewer.wait_for(lambda v: "copied in a native app" in v.clipboard, TIMEOUT)
                finally:
                    copier.kill()
                    copier.wait(10)


_CLICK_PROBE = """
import tkinter
root = tkinter.Tk()
root.title("click probe")
root.geometry("300x200+700+300")
button = tkinter.Button(root, text="press me", command=lambda: print("pressed", flush=True))
button.pack(expand=True, fill="both")
for wheel in ("<Button-4>", "<Button-5>"):  # XWayland turns wheel notches into buttons 4 and 5
    root.bind_all(wheel, lambda event: print("wheel", event.num, flush=True))
root.after(300, lambda: print("ready", button.winfo_rootx(), button.winfo_rooty(), button.winfo_width(),
                              button.winfo_height(), flush=True))
root.mainloop()
"""


async def test_a_click_or_a_wheel_without_a_move_first_lands_on_the_xwayland_window_under_it(
        wayland: MutterHandle) -> None:  # noqa: F811
    """A viewer's press and release (then a wheel notch) at a new place, with no move before them (a tap, a click after the pointer
    left the viewer): Mutter finds the window under the pointer only when it paints, so the injector lets a frame
    pass between the motion and the button — without it the press went to the desktop (the old target) and the
    X11 app under the pointer saw nothing."""
    from agent.screen.capture import Monitor
    from agent.screen.wayland.injector import MutterInjector
    from protocol.stream import InputMouse

    probe = subprocess.Popen([sys.executable, "-c", _CLICK_PROBE], env={**os.environ, **wayland.env()},
                             stdout=subprocess.PIPE, text=True)
    session = await MutterSession.open()
    try:
        assert probe.stdout is not None
        ready = (await asyncio.to_thread(probe.stdout.readline)).split()
        assert ready and ready[0] == "ready", ready
        x, y = int(ready[1]) + int(ready[3]) // 2, int(ready[2]) + int(ready[4]) // 2
        injector = MutterInjector(session, asyncio.get_running_loop())
        s = session.stream
        monitor = Monitor(s.x, s.y, s.w, s.h, primary=True)
        for action in ("down", "up"):
            await asyncio.to_thread(injector.inject, InputMouse(x=x, y=y, action=action), monitor)
        line = await asyncio.wait_for(asyncio.to_thread(probe.stdout.readline), TIMEOUT)
        assert line.strip() == "pressed"
        # A wheel notch at another place, again with no move first, scrolls what is under it there.
        await asyncio.to_thread(injector.inject, InputMouse(x=x + 40, y=y + 20, action="wheel", dy=1), monitor)
        line = await asyncio.wait_for(asyncio.to_thread(probe.stdout.readline), TIMEOUT)
        assert line.split()[:1] == ["wheel"], line
    finally:
        probe.kill()
        probe.wait(10)
        await session.close()


_ENTRY_PROBE = """
import tkinter
root = tkinter.Tk()
root.title("entry probe")
root.geometry("500x120+700+300")
text = tkinter.StringVar()
text.trace_add("write", lambda *_: print("text", repr(text.get()), flush=True))
entry = tkinter.Entry(root, textvariable=text, width=60)
entry.pack(expand=True)
entry.focus_force()
root.after(300, lambda: print("ready", flush=True))
root.mainloop()
"""


async def test_text_the_layout_cannot_type_is_refused_with_the_characters_not_lost(
        wayland: MutterHandle) -> None:  # noqa: F811
    """Mutter types a keysym only where a key of the layout makes it, and drops the rest in silence: on this US
    layout ``é`` never arrived. With XWayland's keymap to ask, such text is refused up front, naming the
    characters, and nothing of it is typed; text the layout has is typed whole."""
    from agent.input_injector import InputRefused
    from agent.screen.capture import Monitor
    from agent.screen.wayland.injector import MutterInjector
    from agent.screen.wayland.keymap import XKeymap
    from protocol.stream import InputText

    probe = subprocess.Popen([sys.executable, "-c", _ENTRY_PROBE], env={**os.environ, **wayland.env()},
                             stdout=subprocess.PIPE, text=True)
    session = await MutterSession.open()
    keymap = XKeymap(wayland.display)
    lines: asyncio.Queue[str] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    def read(out: IO[str]) -> None:  # one reader of the probe's lines, for the whole test
        for line in out:
            loop.call_soon_threadsafe(lines.put_nowait, line)

    try:
        assert probe.stdout is not None
        threading.Thread(target=read, args=(probe.stdout,), daemon=True).start()
        assert (await asyncio.wait_for(lines.get(), TIMEOUT)).strip() == "ready"
        s = session.stream
        monitor = Monitor(s.x, s.y, s.w, s.h, primary=True)
        injector = MutterInjector(session, loop, keymap=keymap)
        shown = ""

        async def typed(text: str) -> None:
            nonlocal shown
            await asyncio.to_thread(injector.inject, InputText(text=text), monitor)
            while not shown.endswith(text):
                line = await asyncio.wait_for(lines.get(), TIMEOUT)
                assert line.startswith("text "), line
                shown = ast.literal_eval(line[5:])

        # The first keys of a new virtual keyboard can be lost while XWayland takes its keymap: warm it up.
        for _ in range(5):
            try:
                await asyncio.wait_for(typed("w"), 3)
                break
            except TimeoutError:
                continue
        await typed(" Hello, World! (42 + 1) = 43")
        before = shown
        with pytest.raises(InputRefused, match="é"):
            await asyncio.to_thread(injector.inject, InputText(text="café au lait"), monitor)
        await typed(" done")
        assert shown == before + " done", shown  # nothing of the refused text reached the entry
    finally:
        probe.kill()
        probe.wait(10)
        await asyncio.to_thread(keymap.close)
        await session.close()
