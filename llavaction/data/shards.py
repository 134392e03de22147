"""The shard format, in one place: what data_prep.extract_frames writes and what training, evaluation, the exports
and the benchmarks read.

A shard set is a location, a local directory or a URL prefix (`https://`, `http://`, `s3://`, `gs://`, or `pipe:`
followed by a command with `{name}` for the file name), holding `sizes.json` ({shard file name: samples}), the tar
shards it lists and `index.json` ({shard file name: [one entry per sample: its key, its line in the question file, its
conversations, a word count per conversation, a digest of its question]}), so that an epoch is planned and a question
file checked against the shards without reading a frame. A sample is `{key}.json` (the question record plus the frame
metadata: `num_frames`, `frame_size`, `frame_ids`, ...) and one JPEG per frame, `{key}.000.jpg`, `{key}.001.jpg`, ...
Shards are read as streams, never copied first; a read that fails on a remote location is retried from where it
stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

SIZES_FILE = "sizes.json"
INDEX_FILE = "index.json"
# {shard file name: conversations}, for shards of replayed videos whose samples carry several conversations each
CONVERSATIONS_FILE = "conversations.json"
SHARD_PATTERN = "shard-{:06d}.tar"
BUILD_HINT = "python -m data_prep.extract_frames --questions Q.jsonl --videos DIR --out {location}"
REMOTE_SCHEMES = ("http://", "https://", "s3://", "gs://", "pipe:")
READ_RETRIES = 3
RETRY_DELAY_SEC = 1.0
HTTP_TIMEOUT_SEC = 30.0


class ShardError(OSError):
    """A shard set or shard that cannot be read as listed; the message names it."""


class ShardChanged(ShardError):
    """A shard whose samples are not the ones its index lists (replaced after indexing): never a counted skip."""


# What a question asks: two records with equal fields ask the same question about the same frames.
QUESTION_FIELDS = (
    "narration_id",
    "options",
    "option_actions",
    "answer_index",
    "prior_actions",
    "clip_start_sec",
    "clip_stop_sec",
)


def question_digest(record: dict) -> str:
    """A digest of what a question asks (QUESTION_FIELDS): the shards keep it per sample, so a question file is
    checked against them without reading them."""
    question = {k: record.get(k) for k in QUESTION_FIELDS}
    text = json.dumps(question, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# Which clip a sample's frames show: a question over a frame store must ask about the clip the store holds for its key.
CLIP_FIELDS = ("video_id", "clip_start_sec", "clip_stop_sec", "start_frame", "stop_frame")


def clip_digest(record: dict) -> str:
    """A digest of the clip a record's frames come from (CLIP_FIELDS), kept per sample in index.json."""
    clip = {k: record.get(k) for k in CLIP_FIELDS}
    return hashlib.sha256(json.dumps(clip, sort_keys=True).encode()).hexdigest()[:16]


def text_words(record: dict) -> list[int]:
    """The length of each conversation a sample holds, in words (the reference groups batches by word counts): every
    turn of each conversation of a replayed video; otherwise the narration, the options and the answer."""
    conversations = record.get("conversations")
    if conversations:
        return [sum(len(str(turn.get("value", "")).split()) for turn in turns) for turns in conversations]
    texts = [record.get("narration"), *(record.get("options") or []), record.get("answer")]
    return [sum(len(t.split()) for t in texts if isinstance(t, str))]


def index_entry(record: dict, line: int) -> dict:
    """A sample's entry in index.json: key, line in its question file, conversations (None: the sample is one),
    words per conversation, question digest and clip digest."""
    conversations = record.get("conversations")
    return {
        "key": record["narration_id"],
        "line": line,
        "conversations": len(conversations) if conversations else None,
        "words": text_words(record),
        "digest": question_digest(record),
        "clip": clip_digest(record),
    }


def frame_name(index: int) -> str:
    """The sample-field name of frame `index` (the file is `{key}.{frame_name}`)."""
    return f"{index:03d}.jpg"


def make_sample(key: str, meta: dict, jpegs: list[bytes]) -> dict:
    """A sample as TarWriter writes it: the record plus frame metadata as JSON, and its JPEG frames."""
    sample = {"__key__": key, "json": json.dumps(meta, ensure_ascii=False).encode()}
    sample |= {frame_name(i): jpeg for i, jpeg in enumerate(jpegs)}
    return sample


def is_remote(location: str | Path) -> bool:
    return str(location).startswith(REMOTE_SCHEMES)


def join(location: str | Path, name: str) -> str:
    """The URL or path of a file of the shard set."""
    location = str(location)
    if location.startswith("pipe:"):
        return location.replace("{name}", name)
    if is_remote(location):
        return location.rstrip("/") + "/" + name
    return str(Path(location) / name)


def open_stream(url: str) -> BinaryIO:
    """A binary stream of a local file or a remote object (http(s) by urllib, s3 by the aws CLI, gs by gsutil, or a
    pipe: command's stdout)."""
    if url.startswith(("http://", "https://")):
        return urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SEC)
    if url.startswith(("s3://", "gs://", "pipe:")):
        command = {"s3": ["aws", "s3", "cp", url, "-"], "gs": ["gsutil", "cat", url]}.get(url.split(":", 1)[0])
        process = subprocess.Popen(
            command or shlex.split(url[len("pipe:") :]), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        return _ProcessStream(process, url)
    return open(url, "rb")


class _ProcessStream:
    """A command's stdout as a stream that fails, naming the URL, when the command fails."""

    def __init__(self, process: subprocess.Popen, url: str):
        self.process, self.url = process, url

    def read(self, size: int = -1) -> bytes:
        data = self.process.stdout.read(size)
        if not data and self.process.wait() != 0:
            raise OSError(f"{self.url}: the command exited with status {self.process.returncode}")
        return data

    def close(self) -> None:
        self.process.stdout.close()
        self.process.kill()
        self.process.wait()


def read_text(url: str) -> str:
    """A small file of a shard set (sizes.json), retried on remote locations."""
    for attempt in range(READ_RETRIES + 1):
        try:
            stream = open_stream(url)
            try:
                return stream.read().decode()
            finally:
                stream.close()
        except FileNotFoundError:
            raise
        except urllib.error.HTTPError as err:
            if err.code == 404:
                raise FileNotFoundError(url) from None
            failure = err
        except OSError as err:
            if not is_remote(url):
                raise
            failure = err
        if attempt < READ_RETRIES:
            time.sleep(RETRY_DELAY_SEC * (attempt + 1))
    raise ShardError(f"{url}: cannot be read after {READ_RETRIES} retries ({failure})")


def read_sizes(location: str | Path) -> dict[str, int]:
    """sizes.json of a shard set: {shard file name: samples}. A missing set names the command that builds it; an
    empty set, or local shards that are not there, are errors naming the location."""
    url = join(location, SIZES_FILE)
    try:
        sizes = json.loads(read_text(url))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{url} not found; build the shards with: {BUILD_HINT.format(location=location)}"
        ) from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{url}: not valid JSON ({err})") from None
    if not isinstance(sizes, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes.values()
    ):
        raise ShardError(f"{url}: expected {{shard file name: sample count}} with counts as integers >= 0")
    if not sizes or not sum(sizes.values()):
        raise ShardError(f"{location}: the shard set holds no sample (every sample was skipped when it was written?)")
    if not is_remote(location):
        absent = [name for name in sizes if not (Path(location) / name).exists()]
        if absent:
            raise ShardError(f"{location}: shards listed in {SIZES_FILE} are missing: {absent[:5]}")
    return sizes


def read_index(location: str | Path) -> dict[str, list[dict]]:
    """index.json of a shard set, checked against sizes.json. A set written before index.json existed is indexed by
    reading its samples' JSON (every shard is streamed: slow for a large set; extract_frames writes the index)."""
    sizes = read_sizes(location)
    url = join(location, INDEX_FILE)
    try:
        index = json.loads(read_text(url))
    except FileNotFoundError:
        log.warning("%s has no %s: reading every shard to index it", location, INDEX_FILE)
        index, line = {}, 0
        for name, size in sizes.items():
            index[name] = []
            for sample in iter_shard(join(location, name), expected=size):
                index[name].append(index_entry(sample_meta(sample) | {"narration_id": sample["__key__"]}, line))
                line += 1
        return index
    except json.JSONDecodeError as err:
        raise ShardError(f"{url}: not valid JSON ({err})") from None
    for name, size in sizes.items():
        if len(index.get(name, ())) != size:
            raise ShardError(f"{url}: lists {len(index.get(name, ()))} samples of {name}, {SIZES_FILE} {size}")
    return {name: index[name] for name in sizes}


def shard_urls(location: str | Path) -> list[str]:
    return [join(location, name) for name in read_sizes(location)]


def iter_shard(url: str, expected: int | None = None, keys: Sequence[str] | None = None) -> Iterator[dict]:
    """The samples of one shard, in order ({'__key__', '__url__', 'json', '000.jpg', ...}). A remote read that fails is
    reopened and continues after the samples already given (READ_RETRIES times). With `expected` (its sizes.json
    count), a shard that ends early raises ShardError naming it, and its last sample, which may be cut, is not given.
    With `keys` (its index.json keys), a sample whose key is not the one listed at its place, or one more than listed,
    raises ShardError: the shard changed after it was indexed."""
    given, attempts, pending = 0, 0, None
    while True:
        try:
            for index, sample in enumerate(_tar_samples(url)):
                if index < given + (pending is not None):
                    continue
                if keys is not None:
                    _check_key(url, index, sample["__key__"], keys)
                if pending is not None:
                    yield pending
                    given += 1
                pending = sample
            break
        except ShardError:  # the shard's content itself is wrong: reading it again changes nothing
            raise
        except (OSError, tarfile.TarError, EOFError) as err:
            if not is_remote(url) or attempts >= READ_RETRIES:
                raise ShardError(
                    f"{url}: read error after {given} samples ({type(err).__name__}: {err}); the shard "
                    "is truncated or unreadable"
                ) from None
            attempts += 1
            time.sleep(RETRY_DELAY_SEC * attempts)
    read = given + (pending is not None)
    if expected is not None and read < expected:
        raise ShardError(f"{url}: {read} samples, {SIZES_FILE} lists {expected}; the shard is truncated")
    if pending is not None:
        yield pending


def _check_key(url: str, index: int, key: str, keys: Sequence[str]) -> None:
    if index >= len(keys) or key != keys[index]:
        listed = repr(keys[index]) if index < len(keys) else f"only {len(keys)} samples"
        raise ShardChanged(
            f"{url}: sample {index} is {key!r} where {INDEX_FILE} lists {listed}: the shard changed after it was "
            "indexed; rebuild the shard set (extract_frames, merge_shards) rather than replace its tars"
        )


def _tar_samples(url: str) -> Iterator[dict]:
    stream = open_stream(url)
    try:
        sample = None
        for name, data in _tar_members(stream, url):
            key, _, field = os.path.basename(name).partition(".")
            if sample is not None and key != sample["__key__"]:
                yield sample
                sample = None
            if sample is None:
                sample = {"__key__": key, "__url__": url}
            sample[field] = data
        if sample is not None:
            yield sample
    finally:
        stream.close()


BLOCK = 512


def _read_exactly(stream: BinaryIO, size: int, url: str) -> bytes:
    data = stream.read(size)
    while len(data) < size:  # pipes and sockets may return less than asked
        more = stream.read(size - len(data))
        if not more:
            raise EOFError(f"{url}: the tar ends inside a member")
        data += more
    return data


def _tar_members(stream: BinaryIO, url: str) -> Iterator[tuple[str, bytes]]:
    """(name, content) of each regular file of a tar stream, read with one call per header and per member (Python's
    tarfile costs more than decoding the JPEGs' headers). Handles what webdataset's TarWriter (Python's tarfile)
    writes: ustar headers, GNU long names and PAX path records; other members are skipped."""
    long_name = None
    while True:
        header = stream.read(BLOCK)
        while header and len(header) < BLOCK:
            more = stream.read(BLOCK - len(header))
            if not more:
                raise EOFError(f"{url}: the tar ends inside a header")
            header += more
        if not header or header == bytes(BLOCK):  # the end-of-archive blocks (or a stream that just stops)
            return
        checksum = header[148:156].split(b"\0", 1)[0].strip()
        if not checksum or int(checksum, 8) != sum(header[:148]) + 256 + sum(header[156:]):
            raise tarfile.ReadError(f"{url}: a damaged tar header")
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        kind = header[156:157]
        data = _read_exactly(stream, size, url)
        padding = -size % BLOCK
        if padding:
            _read_exactly(stream, padding, url)
        if kind == b"L":  # GNU long name of the next member
            long_name = data.split(b"\0", 1)[0].decode()
        elif kind == b"x":  # PAX extended header: its path record names the next member
            for record in data.decode().splitlines():
                field = record.split(" ", 1)[1] if " " in record else ""
                if field.startswith("path="):
                    long_name = field[len("path=") :]
        elif kind in (b"0", b"\0", b"7"):
            name = header[:100].split(b"\0", 1)[0].decode()
            prefix = header[345:500].split(b"\0", 1)[0].decode() if header[257:262] == b"ustar" else ""
            yield long_name or (f"{prefix}/{name}" if prefix else name), data
            long_name = None
        else:  # directories, links, global headers: no sample content
            long_name = None


def iter_samples(urls: Iterable[str], sizes: dict[str, int] | None = None) -> Iterator[dict]:
    """The samples of several shards in order; with sizes ({url: count}) each shard's count is checked."""
    for url in urls:
        yield from iter_shard(url, None if sizes is None else sizes.get(url))


def first_sample(location: str | Path) -> dict:
    """The first sample of a shard set (setup checks read only this)."""
    return next(iter_shard(shard_urls(location)[0]))


def stored_frames(locations: Iterable[str | Path]) -> int:
    """The frames every shard set holds per sample (the fewest of their first samples')."""
    return min(sample_meta(first_sample(location))["num_frames"] for location in locations)


def sample_meta(sample: dict) -> dict:
    return json.loads(sample["json"])


def indexed_keys(locations: Iterable[str | Path]) -> dict[str, tuple[str, str, dict]]:
    """{key: (shard set, shard name, index entry)} over shard sets read together; a key held twice (two sets of the
    same questions, say at 4 and at 8 frames) is an error naming both places: a question is scored once."""
    held: dict[str, tuple[str, str, dict]] = {}
    for location in locations:
        for name, entries in read_index(location).items():
            for entry in entries:
                if entry["key"] in held:
                    first = held[entry["key"]]
                    raise ShardError(
                        f"{entry['key']} is held twice: in {join(first[0], first[1])} and in {join(location, name)}; "
                        "a question is scored once, so read one of the two shard sets"
                    )
                held[entry["key"]] = (str(location), name, entry)
    return held


def location_sizes(locations: Iterable[str | Path]) -> dict[str, int]:
    """{shard url: samples} over several shard sets, in order."""
    return {join(location, name): size for location in locations for name, size in read_sizes(location).items()}
