"""Video clips through the image engine: decode, translate frame batches, keep them steady.

- :mod:`.formats`: which files are videos (by name and by their first bytes), no codec loaded;
- :mod:`.containers`: PyAV's streaming reader and writer (timestamps, rotation, audio copied);
- :mod:`.flow`: optical flow between input frames (OpenCV's DIS) and its occlusion mask;
- :mod:`.temporal`: the blend that removes flicker, scene cuts, and the warping error;
- :mod:`.pipeline`: one clip from file to file with bounded memory, for every front door.
"""
