"""benchmarks/screen_pipeline.py --frames: the figures it prints follow what the pipeline sends."""

from __future__ import annotations

import pytest

from agent.screen import cut
from benchmarks.screen_pipeline import run_frames


def test_the_cut_shows_in_the_jpeg_pixels_and_bytes_at_the_same_quality(monkeypatch: pytest.MonkeyPatch) -> None:
    """testsrc2 with a turning hue (ffmpeg's frames): pictures over the bars' FILLs cut to their differing
    pixels send fewer JPEG pixels and bytes than whole ones (``--whole-pictures``), at the same PSNR."""
    cut_figures = run_frames("video", 6, 75, psnr=True)
    monkeypatch.setattr(cut, "AVAILABLE", False)
    whole = run_frames("video", 6, 75, psnr=True)
    assert cut_figures["frames"] == whole["frames"] == 6
    assert cut_figures["sent_kpx_per_frame"] == whole["sent_kpx_per_frame"]  # the same changed tiles
    assert cut_figures["jpeg_kpx_per_frame"] < 0.85 * whole["jpeg_kpx_per_frame"]
    assert cut_figures["bytes_per_frame"] < whole["bytes_per_frame"]
    assert cut_figures["psnr_db"] > whole["psnr_db"] - 0.2
    assert whole["jpeg_kpx_per_frame"] <= whole["sent_kpx_per_frame"]
