"""Fetch the Open Images JPEGs of one split shard from an S3 bucket: resumable, verified.

One job = one split (train, validation, v5test, test) x one first hex digit of
the ImageID. It fetches exactly the IDs it is given into ``{image_dir}/{ID}.jpg``:

- an image already there and valid (a complete JPEG) is not fetched again;
  a killed job, rerun, fetches only what is missing;
- every image is written to a temporary name next to its place and renamed,
  after its checks: the object's length (``Content-Length``), its MD5 where
  the ETag is one (a single-part upload; a multipart ETag ``"...-N"`` is not
  an MD5), and the JPEG structure (:func:`jpeg_size`: SOI, a frame header
  that gives a size, and the EOI marker after the image data);
- transient errors (HTTP 5xx and throttling, timeouts, resets, a short body,
  a checksum mismatch) are retried with exponential backoff and jitter;
- missing objects (404) and objects that are not complete JPEGs are listed,
  never silently skipped: the caller decides (``download.allow_missing``).

Client: boto3/botocore with an UNSIGNED config, as the dataset's own
``downloader.py`` does. Chosen over plain HTTP (urllib3) because it speaks
S3 itself: any S3-compatible endpoint, bucket addressing (virtual-hosted or
path style), signed requests for a private mirror (``anonymous: false``),
S3's error codes (``NoSuchKey`` vs ``AccessDenied`` vs ``SlowDown``), and a
thread-safe client whose urllib3 pool keeps ``threads`` connections alive and
reuses them. Its per-request overhead (about 1-3 ms of CPU) is small next to
fetching a 300 KB object; where one process is not enough, Snakemake runs
several jobs (``--resources downloads=N``). botocore's own retries are turned
off: one retry loop here covers the request AND the body (a connection reset
while reading the body is not retried by botocore), with one count and one
log line per retry.

Resume state: ``cache_path`` (a CSV written atomically at least once a
minute and at the end) records ImageID, bytes, size, MD5 and the file's
modification time; a file whose size and mtime match its entry is taken as
verified without reading it again, any other file present is read and
checked.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import random
import re
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from oidseg.errors import InputError, atomic_path

MANIFEST_COLUMNS = ("ImageID", "Bytes", "ImageWidth", "ImageHeight", "MD5")
SKIPPED_COLUMNS = ("ImageID", "Reason")
_CACHE_COLUMNS = (*MANIFEST_COLUMNS, "MtimeNs")
HEX = "0123456789abcdef"

# --------------------------------------------------------------------------- JPEG


class JpegError(ValueError):
    """The bytes are not a complete JPEG."""


# start-of-frame markers (baseline, extended, progressive, lossless, ...);
# C4 (DHT), C8 (JPG) and CC (DAC) are not frames
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a JPEG's frame header; raises :class:`JpegError`
    unless the bytes are a complete JPEG: SOI first, a frame header (SOF)
    with a non-zero size before the first scan, and an EOI marker after the
    start of the image data. Entropy-coded data cannot hold ``FF D9`` (an
    ``FF`` byte there is stuffed as ``FF 00``), so a file cut anywhere after
    its headers has no EOI after its scan. Bytes after the EOI (a camera's
    trailer) are allowed: the transfer itself is checked by length and MD5.
    """
    n = len(data)
    if n < 4 or data[0] != 0xFF or data[1] != 0xD8:
        raise JpegError("not a JPEG (no SOI marker at the start)")
    pos, size = 2, None
    while True:
        if pos >= n:
            raise JpegError(f"truncated in its headers (at byte {pos} of {n})")
        if data[pos] != 0xFF:
            raise JpegError(f"no marker at byte {pos} of its headers")
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise JpegError(f"truncated in its headers (at byte {pos} of {n})")
        marker = data[pos]
        pos += 1
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # no length
            continue
        if marker == 0xD9:
            raise JpegError("EOI marker before any image data")
        if pos + 2 > n:
            raise JpegError(f"truncated in its headers (at byte {pos} of {n})")
        length = (data[pos] << 8) | data[pos + 1]
        if length < 2 or pos + length > n:
            raise JpegError(f"truncated in its headers (segment {marker:#04x} at byte {pos} "
                            f"needs {length} bytes, {n - pos} left)")
        if marker in _SOF:
            if length < 7:
                raise JpegError(f"frame header too short ({length} bytes)")
            height = (data[pos + 3] << 8) | data[pos + 4]
            width = (data[pos + 5] << 8) | data[pos + 6]
            size = (width, height)
        elif marker == 0xDA:  # start of scan: the image data follows
            if size is None:
                raise JpegError("no frame header (SOF) before the image data")
            scan = pos + length
            break
        pos += length
    width, height = size
    if width == 0 or height == 0:
        raise JpegError(f"its header gives no size ({width}x{height})")
    if data.rfind(b"\xff\xd9", scan) < 0:
        raise JpegError(f"no EOI marker after the image data: truncated ({n} bytes)")
    return width, height


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class S3Source:
    """Where the objects are: ``s3://{bucket}/{key_template.format(image_id=ID)}``
    at ``endpoint_url`` (None: AWS's own endpoint for ``region``)."""

    endpoint_url: str | None
    bucket: str
    key_template: str
    region: str = "us-east-1"
    anonymous: bool = True
    addressing_style: str = "auto"

    def __post_init__(self):
        try:
            probe = self.key_template.format(image_id="0123456789abcdef")
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(f"key template {self.key_template!r}: only {{image_id}} may be "
                             f"used ({exc!r})") from None
        if "{image_id}" not in self.key_template or not probe:
            raise InputError(f"key template {self.key_template!r} has no {{image_id}}")

    def key(self, image_id: str) -> str:
        return self.key_template.format(image_id=image_id)

    def where(self) -> str:
        at = self.endpoint_url or f"AWS S3 ({self.region})"
        return f"s3://{self.bucket} at {at}"


@dataclass(frozen=True)
class FetchOptions:
    threads: int = 32
    retries: int = 8  # tries after the first, per image
    timeout_s: float = 60.0  # connect and read timeout of one request
    backoff_s: float = 0.5  # first retry waits up to this, doubling each time
    backoff_max_s: float = 30.0
    verify_etag: bool = True  # compare a single-part ETag with the MD5
    progress_interval_s: float = 30.0


def make_client(source: S3Source, options: FetchOptions):
    """A boto3 S3 client shared by the worker threads (clients are thread-safe)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    kwargs = dict(
        max_pool_connections=options.threads + 2,  # one kept-alive connection per thread
        connect_timeout=options.timeout_s,
        read_timeout=options.timeout_s,
        retries={"total_max_attempts": 1},  # our own loop retries (body included)
        s3={"addressing_style": source.addressing_style},
        tcp_keepalive=True,
    )
    if source.anonymous:
        kwargs["signature_version"] = UNSIGNED
    session = boto3.session.Session()
    return session.client("s3", endpoint_url=source.endpoint_url or None,
                          region_name=source.region, config=Config(**kwargs))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Record:
    image_id: str
    nbytes: int
    width: int
    height: int
    md5: str
    mtime_ns: int = 0

    def row(self) -> list:
        return [self.image_id, self.nbytes, self.width, self.height, self.md5]


def record_of(image_id: str, data: bytes, mtime_ns: int = 0) -> Record:
    width, height = jpeg_size(data)
    return Record(image_id, len(data), width, height, hashlib.md5(data).hexdigest(), mtime_ns)


def csv_text(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """CSV with header, written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(csv_text(header, rows), encoding="utf-8")


def write_shard_outputs(manifest: str | Path, skipped: str | Path, result: "ShardResult") -> None:
    """The manifest and the skipped list, both written in full before either is
    renamed into place."""
    texts = {
        Path(skipped): csv_text(SKIPPED_COLUMNS, sorted(result.unavailable.items())),
        Path(manifest): csv_text(MANIFEST_COLUMNS,
                                 (result.records[i].row() for i in sorted(result.records))),
    }
    with contextlib.ExitStack() as stack:
        for path, text in texts.items():
            stack.enter_context(atomic_path(path)).write_text(text, encoding="utf-8")


def load_cache(path: str | Path) -> dict[str, Record]:
    """The resume state of a shard (empty if absent or unreadable: then every
    file present is read and checked again)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            if tuple(next(reader, ())) != _CACHE_COLUMNS:
                return {}
            out = {}
            for row in reader:
                if len(row) == len(_CACHE_COLUMNS):
                    iid, nbytes, w, h, md5, mtime = row
                    out[iid] = Record(iid, int(nbytes), int(w), int(h), md5, int(mtime))
            return out
    except (OSError, ValueError, csv.Error):
        return {}


def save_cache(path: str | Path, records: Iterable[Record]) -> None:
    write_csv(path, _CACHE_COLUMNS,
              ([*r.row(), r.mtime_ns] for r in sorted(records, key=lambda r: r.image_id)))


# --------------------------------------------------------------------------- errors


class _Transient(Exception):
    """Worth another try (5xx, throttling, timeouts, resets, bad bytes in transit)."""


class _Unavailable(Exception):
    """The object is not in the bucket (404), or is not a complete JPEG there."""


class _Fatal(Exception):
    """No image can be fetched (access denied, no such bucket, bad request)."""


_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                    "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}


def _classify_client_error(exc, key: str, source: S3Source) -> Exception:
    response = getattr(exc, "response", {}) or {}
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    code = str(response.get("Error", {}).get("Code", ""))
    what = f"HTTP {status} {code}".strip()
    if code in ("NoSuchKey", "NotFound") or (status == 404 and code != "NoSuchBucket"):
        return _Unavailable(f"not in the bucket ({what})")
    if status >= 500 or status == 429 or code in _TRANSIENT_CODES:
        return _Transient(what)
    hint = ""
    if status == 403:
        hint = (" (anonymous access refused: check download.endpoint_url, download.bucket "
                "and download.anonymous; a bucket that does not allow listing answers 403, "
                "not 404, for a missing key)")
    return _Fatal(f"s3://{source.bucket}/{key}: {what}{hint}")


# --------------------------------------------------------------------------- the job


@dataclass
class ShardResult:
    records: dict[str, Record] = field(default_factory=dict)
    present: int = 0
    fetched: int = 0
    fetched_bytes: int = 0
    retries: int = 0
    unavailable: dict[str, str] = field(default_factory=dict)  # ID -> reason
    failed: dict[str, str] = field(default_factory=dict)  # ID -> last transient error


class ShardDownload:
    """Fetch ``image_ids`` into ``image_dir`` with a pool of threads."""

    def __init__(self, image_ids: Sequence[str], image_dir: str | Path, source: S3Source,
                 options: FetchOptions, *, label: str, cache_path: str | Path | None = None,
                 client=None, log: Callable[[str], None] | None = None):
        self.ids = list(image_ids)
        self.image_dir = Path(image_dir)
        self.source = source
        self.options = options
        self.label = label
        self.cache_path = Path(cache_path) if cache_path else None
        self.client = client
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.result = ShardResult()
        self._lock = threading.Lock()
        self._next = 0
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._started = time.time()
        self._cache: dict[str, Record] = {}

    # ----------------------------------------------------------------- public
    def run(self) -> ShardResult:
        self.image_dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_tmp()
        self._cache = load_cache(self.cache_path) if self.cache_path else {}
        if self.client is None and self.ids:
            self.client = make_client(self.source, self.options)
        n_threads = max(1, min(self.options.threads, len(self.ids)))
        workers = [threading.Thread(target=self._worker, name=f"fetch-{i}", daemon=True)
                   for i in range(n_threads)]
        for w in workers:
            w.start()
        last = time.time()
        interval = self.options.progress_interval_s
        try:
            while alive := [w for w in workers if w.is_alive()]:
                alive[0].join(timeout=max(0.05, min(1.0, last + interval - time.time())))
                if time.time() - last >= interval:
                    last = time.time()
                    self._progress()
                    self._save_cache()
        except BaseException:
            # interrupted (Ctrl-C, or SIGTERM turned into SystemExit by the
            # script): keep what is verified; the daemon threads die with us
            self._stop.set()
            self._save_cache()
            raise
        self._save_cache()
        self._progress(final=True)
        if self._fatal:
            raise InputError(f"{self.label}: {self._fatal}")
        return self.result

    # ----------------------------------------------------------------- workers
    def _take(self) -> str | None:
        with self._lock:
            if self._stop.is_set() or self._next >= len(self.ids):
                return None
            image_id = self.ids[self._next]
            self._next += 1
            return image_id

    def _worker(self) -> None:
        while (image_id := self._take()) is not None:
            try:
                self._one(image_id)
            except _Fatal as exc:
                with self._lock:
                    self._fatal = self._fatal or str(exc)
                self._stop.set()
            except Exception as exc:  # a bug or a local disk error: stop the job, say where
                with self._lock:
                    self._fatal = self._fatal or f"{image_id}: {type(exc).__name__}: {exc}"
                self._stop.set()

    def _one(self, image_id: str) -> None:
        path = self.image_dir / f"{image_id}.jpg"
        record = self._present(image_id, path)
        if record is not None:
            with self._lock:
                self.result.records[image_id] = record
                self.result.present += 1
            return
        try:
            data = self._fetch(image_id)
        except _Unavailable as exc:
            with self._lock:
                self.result.unavailable[image_id] = str(exc)
            return
        except _Transient as exc:
            with self._lock:
                self.result.failed[image_id] = str(exc)
                too_many = len(self.result.failed) > 2 * self.options.threads
            if too_many:  # the source is down, not one object: stop early
                with self._lock:
                    self._fatal = self._fatal or (
                        f"{len(self.result.failed)} images failed after "
                        f"{self.options.retries} retries each (last: {image_id}: {exc}); "
                        f"is {self.source.where()} reachable?")
                self._stop.set()
            return
        record = self._write(image_id, path, data)
        with self._lock:
            self.result.records[image_id] = record
            self.result.fetched += 1
            self.result.fetched_bytes += len(data)

    def _present(self, image_id: str, path: Path) -> Record | None:
        """The record of a valid file already in place, else None."""
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        cached = self._cache.get(image_id)
        if cached and cached.nbytes == st.st_size and cached.mtime_ns == st.st_mtime_ns:
            return cached
        try:
            data = path.read_bytes()
            return record_of(image_id, data, st.st_mtime_ns)
        except JpegError as exc:
            self.log(f"[{self.label}] {path}: present but {exc}: fetching it again")
            return None

    def _fetch(self, image_id: str) -> bytes:
        key = self.source.key(image_id)
        last: Exception | None = None
        for attempt in range(self.options.retries + 1):
            if attempt:
                delay = min(self.options.backoff_max_s, self.options.backoff_s * 2 ** (attempt - 1))
                with self._lock:
                    self.result.retries += 1
                self.log(f"[{self.label}] {key}: {last}; retry {attempt}/{self.options.retries} "
                         f"in {delay:.1f} s")
                if self._stop.wait(delay * random.uniform(0.5, 1.0)):
                    raise _Transient(f"stopped ({last})")
            try:
                return self._get(image_id, key)
            except _Transient as exc:
                last = exc
        raise _Transient(str(last))

    def _get(self, image_id: str, key: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            import urllib3.exceptions as u3
            stream_errors: tuple = (u3.HTTPError,)
        except ImportError:  # pragma: no cover
            stream_errors = ()
        try:
            response = self.client.get_object(Bucket=self.source.bucket, Key=key)
            body = response["Body"]
            try:
                data = body.read()
            finally:
                body.close()
        except ClientError as exc:
            raise _classify_client_error(exc, key, self.source) from None
        except (BotoCoreError, OSError, *stream_errors) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        expected = response.get("ContentLength")
        if expected is not None and int(expected) != len(data):
            raise _Transient(f"got {len(data)} bytes, Content-Length says {expected}")
        etag = str(response.get("ETag") or "").strip('"')
        md5_checked = False
        if self.options.verify_etag and re.fullmatch(r"[0-9a-fA-F]{32}", etag):
            digest = hashlib.md5(data).hexdigest()
            if digest != etag.lower():
                raise _Transient(f"MD5 {digest} differs from the ETag {etag}")
            md5_checked = True
        try:
            jpeg_size(data)
        except JpegError as exc:
            if md5_checked:  # these are the object's own bytes: a retry gets the same
                raise _Unavailable(f"not a complete JPEG in the bucket: {exc}") from None
            raise _Transient(f"not a complete JPEG: {exc}") from None
        return data

    def _write(self, image_id: str, path: Path, data: bytes) -> Record:
        """Atomic: a temporary name next to the image (the ``.NAME.XXXXXXXX.tmp``
        scheme of :func:`oidseg.errors.atomic_path`, without its directory scan,
        which is linear in the folder's size), then a rename."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        return record_of(image_id, data, path.stat().st_mtime_ns)

    # ----------------------------------------------------------------- upkeep
    def _remove_stale_tmp(self) -> None:
        """Temporary files of this shard that a killed job left (older than this job)."""
        shard = {i[:1] for i in self.ids}
        pattern = re.compile(r"\.(.+)\.jpg\.[a-z0-9_]{8}\.tmp")
        with contextlib.suppress(OSError), os.scandir(self.image_dir) as entries:
            for entry in entries:
                match = pattern.fullmatch(entry.name)
                if match and match[1][:1] in shard:
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < self._started:
                            os.unlink(entry.path)

    def _save_cache(self) -> None:
        if self.cache_path is None:
            return
        with self._lock:
            records = list(self.result.records.values())
        merged = {**self._cache, **{r.image_id: r for r in records}}
        with contextlib.suppress(OSError):
            save_cache(self.cache_path, merged.values())

    def _progress(self, final: bool = False) -> None:
        with self._lock:
            r = self.result
            done = r.present + r.fetched + len(r.unavailable) + len(r.failed)
            present, fetched, nbytes = r.present, r.fetched, r.fetched_bytes
            missing, failed, retries = len(r.unavailable), len(r.failed), r.retries
        elapsed = max(time.time() - self._started, 1e-6)
        mb = nbytes / 1e6
        rate = done / elapsed
        left = len(self.ids) - done
        eta = "-" if final else (_hms(left / rate) if rate > 0 else "?")
        self.log(f"[{self.label} {time.strftime('%H:%M:%S')}] {'done: ' if final else ''}"
                 f"{done}/{len(self.ids)} images ({present} present, {fetched} fetched, "
                 f"{missing} unavailable, {failed} failed, {retries} retries), "
                 f"{mb:.1f} MB, {mb / elapsed:.1f} MB/s, {rate:.0f} images/s, ETA {eta}")


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# --------------------------------------------------------------------------- lists


def shard_ids(image_ids: Iterable[str], shard: str, drop: Iterable[str] = (),
              *, source: str = "") -> list[str]:
    """The sorted distinct IDs whose first character is ``shard``, minus ``drop``."""
    if shard not in HEX:
        raise InputError(f"shard {shard!r} is not a hex digit")
    ids = set(image_ids)
    bad = sorted(i for i in ids if i[:1].lower() not in HEX)
    if bad:
        raise InputError(f"{source}: ImageID {bad[0]!r} does not start with a hex digit "
                         f"({len(bad)} such IDs): it belongs to no download shard")
    dropped = set(drop)
    return sorted(i for i in ids if i[:1].lower() == shard and i not in dropped)


def _csv_rows(path: str | Path, columns: tuple[str, ...], what: str):
    """(row number, fields) of a CSV whose header must be ``columns``; a
    missing, undecodable or foreign file is an :class:`InputError` naming it."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            header = tuple(next(reader, ()))
            if header != columns:
                raise InputError(f"{path}: not {what} (header {','.join(header)!r}, expected {','.join(columns)})")
            yield from enumerate(reader, start=2)
    except FileNotFoundError:
        raise InputError(f"{path}: {what} is missing") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: cannot read {what} ({exc})") from None


def read_manifests(paths: Sequence[str | Path]):
    """The image sizes of download manifests as a :class:`oidseg.raw.SizeTable`
    (a shard may have no rows)."""
    import numpy as np

    from oidseg.raw import SizeTable

    ids: list[str] = []
    widths: list[int] = []
    heights: list[int] = []
    for path in paths:
        for n, row in _csv_rows(path, MANIFEST_COLUMNS, "an image manifest"):
            if len(row) != len(MANIFEST_COLUMNS):
                raise InputError(f"{path}: row {n}: {len(row)} fields, expected {len(MANIFEST_COLUMNS)}")
            try:
                w, h = int(row[2]), int(row[3])
            except ValueError:
                raise InputError(f"{path}: row {n} / {row[0]}: size is not a number") from None
            if w < 1 or h < 1:
                raise InputError(f"{path}: row {n} / {row[0]}: size {w}x{h}")
            ids.append(row[0])
            widths.append(w)
            heights.append(h)
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(f"image manifests {', '.join(map(str, paths))}: {dup} listed twice")
    return SizeTable(ids, np.asarray(widths, np.int64), np.asarray(heights, np.int64),
                     source="image manifests")


def read_skipped(paths: Sequence[str | Path]) -> list[str]:
    """The IDs of skipped-image files (``ImageID,Reason``)."""
    return [row[0] for path in paths for _, row in _csv_rows(path, SKIPPED_COLUMNS, "a skipped-images file")
            if row]
