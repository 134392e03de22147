"""Outputs written whole by one writer: locks naming their holder, interrupted writes, JSON lines named by line."""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from llavaction.data.shards import read_sizes
from llavaction.utils.jsonl import read_jsonl
from tests.helpers import ROOT, extract_args


def test_bad_jsonl_names_file_and_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"x.jsonl:2: expected a JSON object"):
        read_jsonl(tmp_path / "x.jsonl")


def test_one_writer_per_output_and_a_dead_writers_lock_is_taken_over(demo_dir, demo_questions, tmp_path):
    from llavaction.utils.files import exclusive_output, lock_path

    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in read_jsonl(demo_questions["validation_mqa"])[:2]))
    out = tmp_path / "shards"
    command = [sys.executable, "-m", "data_prep.extract_frames", *extract_args(questions, demo_dir / "videos", out)]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    with exclusive_output(out):  # another job writing this folder right now
        busy = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    error = busy.stderr.strip().splitlines()
    assert busy.returncode == 2 and len(error) == 1, busy.stderr[-2000:]
    assert f"{out} is being written by pid {os.getpid()}" in error[0] and "choose another output" in error[0]
    assert not (out / "sizes.json").exists()
    # a writer killed while holding the folder leaves its lock; the next run on this host takes it over
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from llavaction.utils.files import exclusive_output\nwith exclusive_output({str(out)!r}):"
            "\n    print('held', flush=True)\n    import time; time.sleep(60)",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert lock_path(out).exists()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "sizes.json").exists() and not lock_path(out).exists()
    # two runs started together into one folder: one writes it, the other is refused, the output is whole
    shutil.rmtree(out)
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    assert sorted(code for code, _ in results) == [0, 2], results
    refused = next(err for code, err in results if code == 2)
    assert any(
        reason in refused for reason in ("is being written by pid", "holds an earlier run", "a frame store already")
    )
    assert sum(read_sizes(out).values()) == 2 and not lock_path(out).exists()


def test_interrupted_writes_leave_nothing_under_the_final_name(tmp_path, monkeypatch):
    import errno

    from llavaction.utils.files import atomic_output
    from llavaction.utils.jsonl import write_jsonl

    class FullDisk:
        """A stream that fails as a full disk does, after some bytes."""

        def __init__(self, stream):
            self.stream, self.written = stream, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 100:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.stream.write(data)

        def __getattr__(self, name):
            return getattr(self.stream, name)

    target = tmp_path / "predictions.jsonl"
    with pytest.raises(OSError, match=f"{target}: No space left on device"):
        with atomic_output(target) as stream:
            full = FullDisk(stream)
            for i in range(100):
                full.write(json.dumps({"i": i}) + "\n")
    assert list(tmp_path.iterdir()) == []  # no final file, no temporary one
    write_jsonl(target, [{"i": 1}])
    assert read_jsonl(target) == [{"i": 1}]
    # a writer killed mid-write leaves only its hidden temporary file, which the next run of the folder removes
    killed = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\nfrom llavaction.utils.files import atomic_output\n"
            f"with atomic_output({str(tmp_path / 'sizes.json')!r}) as f:\n    f.write('{{')\n    f.flush()\n"
            "    os._exit(9)",
        ],
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == 9 and not (tmp_path / "sizes.json").exists()
    from llavaction.utils.files import remove_stale_temporaries

    remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"pid": "x"}'])
def test_a_lock_that_names_no_writer_says_it_looks_stale(tmp_path, content):
    from llavaction.utils.files import OutputBusy, exclusive_output, lock_path

    out = tmp_path / "set.v2"
    lock = lock_path(out)
    lock.write_text(content)
    os.utime(lock, (time.time() - 60, time.time() - 60))  # written a minute ago
    with pytest.raises(
        OutputBusy, match=rf"its lock {lock} is empty or not a lock .* it looks stale; .* remove {lock}"
    ):
        with exclusive_output(out):
            pass
    lock.unlink()
    with exclusive_output(out):  # removed as told, the output is free
        assert lock.exists()
