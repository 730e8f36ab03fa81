"""Temporally consistent face edits on video (``hfgi video``), streamed frame by frame.

- ``ffmpeg``: every ffmpeg call (probe, read frames, write H.264, mux audio);
- ``tracking``: every face's track id, and its crop square smoothed over time;
- ``store``: ``OUT.pt`` and ``OUT.distortion.npy``, what a re-run needs;
- ``sheet``: the contact sheet of a clip's tracks (``--list-faces``, ``--preview``);
- ``edit``: the loop that takes frames through the engine (read it first).
"""

from .edit import (
    Progress,
    VideoOptions,
    VideoResult,
    edit_video,
    edit_video_from_latents,
    parse_faces,
    stored_tracks,
    track_clip,
)
from .ffmpeg import VideoError
from .tracking import TrackInfo

__all__ = ["Progress", "TrackInfo", "VideoError", "VideoOptions", "VideoResult", "edit_video",
           "edit_video_from_latents", "parse_faces", "stored_tracks", "track_clip"]
