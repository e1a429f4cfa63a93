"""A full remote session from the console in Chromium against a real agent on Xvfb.

The technician asks for control on the device page; the consent prompt appears on the
device's display and is answered there with xdotool; the canvas then shows the device's
screen (a photographic change arrives as JPEGs without their standard tables, which the
console puts back, in batched messages of several rectangles, which it reads and draws in order), and a click on the canvas moves the device's pointer. The technician writes notes under
the canvas while the session runs and after it ends; the device's session history shows them as text.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
from pathlib import Path
from typing import Any

import mss
import numpy as np
import simplejpeg
from playwright.async_api import WebSocket, expect

from agent.config import AgentConfig
from agent.consent.tk_app import ALLOW_BG
from agent.screen.encoder import decode, encode_jpeg, encode_png, jpeg_params
from protocol.jpeg_tables import strip_standard_tables
from protocol.stream import HEADER_SIZE, MAGIC_VERSION, Encoding, Flags, Kind, batch_records, pack_update, split_records
from tests.harness import enroll_agent, running_agent, running_server, wait_until
from tests.test_accounts_support import make_user
from tests.test_console_support import console_browser
from tests.test_session_helpers import (
    click_canvas_until_pointer_moves,
    click_colour,
    configure_agent,
    paint_picture,
    wait_for_audit,
)
from tests.xvfb import XvfbHandle, xvfb, xvfb_factory  # noqa: F401 - fixtures

ROOT_COLOUR = (0x33, 0x66, 0x99)
#: Where the photographic change is drawn, and how big it is (40 tiles: a large update, sent as JPEG).
PICTURE_AT, PICTURE_SIZE = (64, 64), (320, 512)
NOTES = "Printer queue cleared.\nTicket #1234 <script>window.__pwned = 1</script> <b>not bold</b>"


async def test_remote_control_session_from_the_console(tmp_path: Path, xvfb: XvfbHandle) -> None:  # noqa: F811
    """Ask for control in the console, Allow on the device, see its screen on the canvas, click to move its pointer."""
    subprocess.run(["xsetroot", "-display", xvfb.display, "-solid", "#" + bytes(ROOT_COLOUR).hex()], check=True,
                   timeout=10)
    async with running_server(tmp_path / "srv") as server:
        tech = await make_user(server, "tess", "technician", groups={"lab": None})
        state = await enroll_agent(server, tmp_path / "agent", group="lab")
        config = AgentConfig(state_dir=state.directory, backoff_cap_s=1.0)
        async with running_agent(state, config, setup=configure_agent(xvfb.display)) as agent:
            await asyncio.wait_for(agent.client.ready.wait(), 10)
            async with console_browser(server) as console:
                page = console.page
                encodings: set[int] = set()  # of the screen updates the console received

                def on_frame(payload: str | bytes) -> None:  # every record of a batch, not just its first
                    if isinstance(payload, bytes) and len(payload) >= HEADER_SIZE and payload[0] == MAGIC_VERSION:
                        encodings.update(record[12] for record in split_records(payload))

                stream_urls: list[str] = []

                def on_websocket(ws: WebSocket) -> None:
                    stream_urls.append(ws.url)
                    ws.on("framereceived", on_frame)

                page.on("websocket", on_websocket)
                await console.login(tech)
                await page.goto(f"{console.base}/#/devices/{state.device_id}")
                await page.click("#start-control")
                await page.fill("#session-reason", "ticket 42: printer setup")
                await page.click("#session-confirm")
                banner = page.locator("#consent-banner")
                await expect(banner).to_have_attribute("data-state", "offered", timeout=10_000)
                await expect(banner).to_contain_text("Waiting for the user")
                waiting_box = await page.locator(".viewer-bar").bounding_box()
                await click_colour(xvfb.display, ALLOW_BG, timeout=15)
                await expect(banner).to_have_attribute("data-mode", "control", timeout=15_000)
                await expect(banner).to_contain_text("User allowed CONTROL")

                async def canvas_shows_root() -> bool:
                    pixel = await page.evaluate("""() => { const c = document.querySelector('#screen');
                        if (c.width < 100) return null;
                        return Array.from(c.getContext('2d').getImageData(5, c.height - 5, 1, 1).data); }""")
                    return pixel is not None and all(abs(a - b) <= 12 for a, b in zip(pixel[:3], ROOT_COLOUR))

                await wait_until(canvas_shows_root, timeout=15, what="the device's screen on the canvas")
                await _lean_jpegs_decode_in_the_console(page)
                await _batches_draw_in_the_console(page)
                # The console says it reads batches (the relay splits them for consoles that do not).
                assert [u for u in stream_urls if "/stream" in u and u.endswith("batched=1")], stream_urls
                assert await page.evaluate("[document.querySelector('#screen').width,"
                                           " document.querySelector('#screen').height]") == [xvfb.width, xvfb.height]
                # A click while the consent prompt is still closing is refused on the device (input waits while a
                # Helpline prompt is on screen): click again until one lands, within the deadline.
                await click_canvas_until_pointer_moves(xvfb.display, page, 0.25, 0.5)
                # The bar above the screen stays one line whatever it says: the screen never moved under the mouse.
                control_box = await page.locator(".viewer-bar").bounding_box()
                assert waiting_box is not None and control_box is not None
                assert control_box == waiting_box, (waiting_box, control_box)
                await expect(page.locator("#viewer-stats")).to_contain_text("fps · ")
                await expect(page.locator("#viewer-stats")).to_contain_text(f"{xvfb.width}×{xvfb.height}")
                await console.shot("viewer")
                picture = _picture(*PICTURE_SIZE)
                await asyncio.to_thread(paint_picture, xvfb.display, *PICTURE_AT, picture)
                await wait_until(lambda: Encoding.JPEG_LEAN in encodings, timeout=15, what="a lean JPEG streamed")

                async def canvas_shows_picture() -> bool:  # as the screen shows it (a window closing may cover a part)
                    shown = await _canvas_region(page, *PICTURE_AT, PICTURE_SIZE[1], PICTURE_SIZE[0])
                    screen = await asyncio.to_thread(_screen_region, xvfb.display, *PICTURE_AT, *PICTURE_SIZE[::-1])
                    assert float(screen.std()) > 30  # the noise is on screen, not the solid root
                    return shown is not None and float(np.abs(shown - screen).mean()) < 2

                await wait_until(canvas_shows_picture, timeout=15, what="the picture on the canvas")
                session_id = page.url.rsplit("/", 1)[1]
                notes = page.locator("#session-notes")
                status = page.locator("#notes-status")
                await expect(notes).to_be_editable()
                await notes.fill(NOTES.split("\n")[0])
                await notes.press("Tab")  # leaving the box saves
                await expect(status).to_have_attribute("data-state", "saved", timeout=10_000)
                await page.click("#end-session")
                await expect(banner).to_have_attribute("data-state", "ended", timeout=10_000)
                await notes.fill(NOTES)  # after the end, still editable; Ctrl+S saves
                await expect(status).to_have_attribute("data-state", "dirty")
                await notes.press("Control+s")
                await expect(status).to_have_attribute("data-state", "saved", timeout=10_000)
                await expect(status).to_contain_text("Saved")

                await page.goto(f"{console.base}/#/devices/{state.device_id}/remote")
                cell = page.locator(f"tr[data-session='{session_id}'] td.session-notes")
                await expect(cell.locator("summary")).to_have_text("Printer queue cleared.…", timeout=15_000)
                await cell.locator("summary").click()
                shown = cell.locator("pre.notes-text")
                await expect(shown).to_be_visible()
                assert await shown.evaluate("e => e.textContent") == NOTES
                assert await cell.locator("script, b").count() == 0
                assert await page.evaluate("window.__pwned") is None
                await expect(cell.locator(".notes-by")).to_contain_text("— tess,")
                assert console.csp_violations() == []
                assert not [e for e in console.errors if e.startswith("pageerror")]
        record = await wait_for_audit(server, "session.notes.update")
        assert record["actor"] == "tess" and session_id in record["details"]


async def _batches_draw_in_the_console(page: Any) -> None:
    """screen.js reads a batched message (a FILL, a lean JPEG and a PNG of one update) as its records, draws them in
    order as Python does (the FILL under the later records), and refuses batches that break the rules."""
    w, h = 128, 64
    picture = _picture(h, w)
    jpeg = encode_jpeg(picture[:, :64], 75)
    lean = strip_standard_tables(jpeg, jpeg_params(75)[0])
    assert lean is not None
    png = encode_png(picture[:32, 64:])
    parts = [(0, 0, w, h, Encoding.FILL, bytes([10, 200, 30])), (0, 0, 64, h, Encoding.JPEG_LEAN, lean),
             (64, 0, 64, 32, Encoding.PNG, png)]
    records = [pack_update(kind=Kind.UPDATE, monitor=0, x=x, y=y, w=rw, h=rh, encoding=enc, seq=5, payload=payload,
                           flags=Flags.END_OF_FRAME if i == len(parts) - 1 else Flags.NONE)
               for i, (x, y, rw, rh, enc, payload) in enumerate(parts)]
    (batch,) = batch_records(records)
    other_update = records[0] + pack_update(kind=Kind.UPDATE, monitor=0, x=0, y=0, w=1, h=1, encoding=Encoding.FILL,
                                            seq=6, payload=b"abc", flags=Flags.END_OF_FRAME)
    after_the_end = records[2] + records[0]
    result = await page.evaluate("""async ([batch, bad, w, h]) => {
        const { parseRecords, drawRecords, endsUpdate } = await import('/static/js/screen.js');
        const bytes = (b64) => Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)).buffer;
        const records = parseRecords(bytes(batch));
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const g = canvas.getContext('2d');
        await drawRecords(g, records);
        return { count: records.length, seqs: records.map((r) => r.seq), ends: endsUpdate(bytes(batch)),
                 refused: bad.map((b) => parseRecords(bytes(b)) === null),
                 truncated: parseRecords(bytes(batch).slice(0, -1)) === null,
                 pixels: Array.from(g.getImageData(0, 0, w, h).data) }; }""",
        [base64.b64encode(batch).decode(), [base64.b64encode(b).decode() for b in (other_update, after_the_end)],
         w, h])
    assert result["count"] == 3 and result["seqs"] == [5, 5, 5] and result["ends"] is True
    assert result["refused"] == [True, True] and result["truncated"] is True
    shown = np.array(result["pixels"], dtype=int).reshape(h, w, 4)[:, :, :3]
    expected = np.zeros((h, w, 3), dtype=int)
    expected[:, :] = (30, 200, 10)  # the FILL (B, G, R on the wire) ...
    expected[:, :64] = decode(Encoding.JPEG, jpeg, 64, h)[:, :, ::-1]  # ... under the JPEG ...
    expected[:32, 64:] = picture[:32, 64:, 2::-1]  # ... and the lossless PNG
    assert np.array_equal(shown[:, 64:], expected[:, 64:])  # FILL and PNG exact
    assert float(np.abs(shown[:, :64] - expected[:, :64]).mean()) < 1.5


def _picture(h: int, w: int) -> np.ndarray:
    """BGRX noise in 4-px blocks: detail a JPEG is made for."""
    rng = np.random.default_rng(42)
    return np.repeat(np.repeat(rng.integers(0, 256, (h // 4, w // 4, 4), dtype=np.uint8), 4, axis=0), 4, axis=1)


def _screen_region(display: str, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The device screen's RGB pixels of a region."""
    with mss.MSS(display=display) as grabber:
        shot = grabber.grab({"left": x, "top": y, "width": w, "height": h})
    return np.frombuffer(shot.raw, dtype=np.uint8).reshape(h, w, 4)[:, :, 2::-1].astype(int)


async def _canvas_region(page: Any, x: int, y: int, w: int, h: int) -> np.ndarray | None:
    """The screen canvas's RGB pixels of a region (None while the canvas is smaller)."""
    data = await page.evaluate("""([x, y, w, h]) => { const c = document.querySelector('#screen');
        if (c.width < x + w || c.height < y + h) return null;
        return Array.from(c.getContext('2d').getImageData(x, y, w, h).data); }""", [x, y, w, h])
    return None if data is None else np.array(data, dtype=int).reshape(h, w, 4)[:, :, :3]


async def _lean_jpegs_decode_in_the_console(page: Any) -> None:
    """The console (screen.js) rebuilds a lean JPEG byte for byte at any quality, and draws it as Python draws
    the whole one."""
    picture = _picture(64, 128)
    cases = ((1, "420"), (29, "444"), (45, "444"), (50, "420"), (75, "444"), (100, "444"))
    files = [simplejpeg.encode_jpeg(picture, quality=q, colorspace="BGRX", colorsubsampling=ss) for q, ss in cases]
    leans = [strip_standard_tables(jpeg, q) for jpeg, (q, _) in zip(files, cases)]
    assert all(lean is not None for lean in leans)
    rebuilt = await page.evaluate("""async (leans) => {
        const { leanJpeg } = await import('/static/js/screen.js');
        const out = [];
        for (const b64 of leans) {
          const blob = leanJpeg(Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0)));
          out.push(blob === null ? null : btoa(String.fromCharCode(...new Uint8Array(await blob.arrayBuffer()))));
        }
        return out; }""", [base64.b64encode(lean).decode() for lean in leans if lean is not None])
    assert [base64.b64decode(b) if b else None for b in rebuilt] == files
    jpeg = encode_jpeg(picture, 75)
    lean = strip_standard_tables(jpeg, jpeg_params(75)[0])
    assert lean is not None
    drawn = await page.evaluate("""async ([b64, w, h]) => {
        const { drawRect, ENC } = await import('/static/js/screen.js');
        const payload = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
        const canvas = document.createElement('canvas');
        canvas.width = w; canvas.height = h;
        const g = canvas.getContext('2d');
        await drawRect(g, { enc: ENC.JPEG_LEAN, payload, x: 0, y: 0, w, h });
        return Array.from(g.getImageData(0, 0, w, h).data); }""", [base64.b64encode(lean).decode(), 128, 64])
    shown = np.array(drawn, dtype=int).reshape(64, 128, 4)
    expected = decode(Encoding.JPEG, jpeg, 128, 64)[:, :, ::-1].astype(int)  # BGR -> RGB
    assert shown[:, :, 3].min() == 255  # drawn, not skipped as malformed
    assert float(np.abs(shown[:, :, :3] - expected).mean()) < 1.5
