"""Temporally consistent face edits on video (``hfgi video``), streamed frame by frame.

- ``ffmpeg``: every ffmpeg call (probe, read frames, write H.264, mux audio);
- ``tracking``: which face, and its crop square smoothed over time;
- ``store``: ``OUT.pt`` and ``OUT.distortion.npy``, what a re-run needs;
- ``edit``: the loop that takes frames through the engine (read it first).
"""

from .edit import VideoOptions, VideoResult, edit_video, edit_video_from_latents
from .ffmpeg import VideoError

__all__ = ["VideoError", "VideoOptions", "VideoResult", "edit_video", "edit_video_from_latents"]
