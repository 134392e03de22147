"""The frame rule of every layout is the reference's: a clip's start and stop rounded to frames, then the floored
midpoints of equal parts between them (rgb_frames: between the segment's EPIC start and stop frames). The table holds
the reference's own indices for real EK-100 validation rows, computed by its get_frame_ids (jitter off) at the video's
fps (raw videos), at 30 fps (the AVION chunks it reads) and from the CSV's frames (its rgb_frames loader)."""

import numpy as np
import pytest

from llavaction.data.video import FrameFolder, clip_frame_ids, midpoint_ids

# (narration id, start, stop, fps, the reference's 8 frame ids)
REFERENCE_SECONDS = [
    ("P01_11_0", 0.0, 1.89, 59.9400599400599, [7, 21, 35, 49, 63, 77, 91, 105]),
    ("P01_11_0", 0.0, 1.89, 30.0, [3, 10, 17, 24, 32, 39, 46, 53]),
    ("P01_11_1", 1.56, 2.45, 59.9400599400599, [97, 103, 110, 117, 123, 130, 137, 143]),
    ("P01_11_1", 1.56, 2.45, 30.0, [48, 52, 55, 58, 62, 65, 68, 72]),
    ("P11_20_91", 271.82, 273.97, 59.9400599400599, [16301, 16317, 16333, 16349, 16365, 16381, 16397, 16413]),
    ("P11_20_91", 271.82, 273.97, 30.0, [8159, 8167, 8175, 8183, 8191, 8199, 8207, 8215]),
    ("P30_08_255", 740.02, 743.35, 59.9400599400599, [44369, 44394, 44419, 44444, 44468, 44493, 44518, 44543]),
    ("P30_08_255", 740.02, 743.35, 30.0, [22207, 22219, 22231, 22244, 22256, 22269, 22281, 22293]),
    ("P05_07_9", 26.59, 31.24, 59.9400599400599, [1611, 1646, 1681, 1716, 1750, 1785, 1820, 1855]),
    ("P05_07_9", 26.59, 31.24, 30.0, [806, 824, 841, 858, 876, 893, 910, 928]),
    ("P22_02_208", 483.89, 485.17, 59.9400599400599, [29008, 29018, 29028, 29037, 29047, 29056, 29066, 29076]),
    ("P22_02_208", 483.89, 485.17, 30.0, [14519, 14524, 14528, 14533, 14538, 14543, 14547, 14552]),
    ("P28_19_16", 72.28, 77.63, 59.9400599400599, [4352, 4392, 4432, 4472, 4512, 4552, 4592, 4632]),
    ("P28_19_16", 72.28, 77.63, 30.0, [2178, 2198, 2218, 2238, 2258, 2278, 2298, 2318]),
    ("P32_05_8", 92.33, 100.37, 59.9400599400599, [5564, 5624, 5684, 5744, 5805, 5865, 5925, 5985]),
    ("P32_05_8", 92.33, 100.37, 30.0, [2785, 2815, 2845, 2875, 2905, 2935, 2965, 2995]),
]
# (narration id, EPIC start frame, stop frame, the reference's 8 rgb_frames file numbers)
REFERENCE_FRAMES = [
    ("P01_11_0", 1, 113, [8, 22, 36, 50, 64, 78, 92, 106]),
    ("P01_11_1", 93, 147, [96, 103, 109, 116, 123, 130, 136, 143]),
    ("P11_20_91", 16309, 16438, [16317, 16333, 16349, 16365, 16381, 16397, 16413, 16429]),
    ("P30_08_255", 44401, 44601, [44413, 44438, 44463, 44488, 44513, 44538, 44563, 44588]),
    ("P05_07_9", 1595, 1874, [1612, 1647, 1682, 1717, 1751, 1786, 1821, 1856]),
    ("P22_02_208", 29033, 29110, [29037, 29047, 29057, 29066, 29076, 29085, 29095, 29105]),
    ("P28_19_16", 4336, 4657, [4356, 4396, 4436, 4476, 4516, 4556, 4596, 4636]),
    ("P32_05_8", 5539, 6022, [5569, 5629, 5689, 5750, 5810, 5871, 5931, 5991]),
]


@pytest.mark.parametrize("narration_id, start, stop, fps, expected", REFERENCE_SECONDS)
def test_clip_frames_are_the_references(narration_id, start, stop, fps, expected):
    ids, clamped = clip_frame_ids(start, stop, 8, fps, last=10**7)
    assert ids == expected and not clamped


@pytest.mark.parametrize("narration_id, start_frame, stop_frame, expected", REFERENCE_FRAMES)
def test_rgb_frames_are_the_references(narration_id, start_frame, stop_frame, expected):
    assert midpoint_ids(start_frame, stop_frame, 8) == expected


def test_a_clip_past_the_video_end_spreads_over_what_the_video_holds():
    """As the reference clamps the stop to the last frame's time before sampling."""
    ids, clamped = clip_frame_ids(9.0, 12.0, 4, 10.0, last=99)
    assert ids == midpoint_ids(90, 99, 4) == [91, 93, 95, 97] and clamped
    ids, clamped = clip_frame_ids(9.0, 10.0, 4, 10.0, last=99)  # stops at the end of the last frame: not cut
    assert not clamped
    ids, clamped = clip_frame_ids(12.0, 13.0, 2, 10.0, last=99)  # starts after the end: the last frame only
    assert ids == [99, 99] and clamped


def test_the_rgb_frames_layout_reads_the_references_files(tmp_path):
    import simplejpeg

    folder = tmp_path / "P01" / "P01_11"
    folder.mkdir(parents=True)
    for number in range(1, 121):
        image = np.full((8, 8, 3), number, dtype=np.uint8)
        (folder / f"frame_{number:010d}.jpg").write_bytes(simplejpeg.encode_jpeg(image, quality=100))
    clip = FrameFolder(tmp_path, "P01", "P01_11", size=8, mode="squash", fps=60.0).clip(0.0, 1.89, 8, frames=(1, 113))
    assert clip.frame_ids == [n - 1 for n in REFERENCE_FRAMES[0][3]] and not clip.clamped
    assert [int(f.mean().round()) for f in clip.frames] == REFERENCE_FRAMES[0][3]
