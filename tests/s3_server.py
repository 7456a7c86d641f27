"""A real S3 server on 127.0.0.1 for the download tests and bench/bench_download.py.

- :func:`moto_server`: moto's standalone server (the ``moto[server]`` test
  extra), in this process (threads) or in a child process (``python -m
  moto.server``, for the benchmark: the server gets its own CPU). A free port
  is picked by the OS; the server is always stopped on exit.
- :func:`public_bucket`: a bucket that anonymous clients may read and list
  (so a missing key answers 404 NoSuchKey), as ``open-images-dataset``.
- :class:`FaultProxy`: an HTTP proxy in front of it that counts the GETs per
  key and injects faults: a status (503 SlowDown) for the first n requests, a
  body cut short after its headers announced the full length, a
  ``Content-Length`` shorter than the object (the ETag still the full
  object's), and a fixed delay per GET.

Nothing here reaches beyond 127.0.0.1.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def _wait_listening(port: int, timeout: float, proc=None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((LOCALHOST, port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {LOCALHOST}:{port} after {timeout} s")


@contextlib.contextmanager
def moto_server(*, separate_process: bool = False) -> Iterator[str]:
    """Yield the endpoint URL of a fresh moto S3 server on 127.0.0.1."""
    if separate_process:
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOCALHOST,
                                 "-p", str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, 30, proc)
            yield f"http://{LOCALHOST}:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address=LOCALHOST, port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def admin_client(endpoint: str):
    """A signed client (moto accepts any credentials) to create buckets and objects."""
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def public_bucket(client, bucket: str) -> None:
    """Create ``bucket`` readable and listable by anyone (as the dataset's)."""
    client.create_bucket(Bucket=bucket)
    policy = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": "*", "Action": ["s3:GetObject", "s3:ListBucket"],
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))


def upload_folder(client, bucket: str, prefix: str, folder: Path) -> int:
    """Put every ``{folder}/{ImageID}.jpg`` at ``{prefix}/{ImageID}.jpg``."""
    n = 0
    for path in sorted(Path(folder).glob("*.jpg")):
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=path.read_bytes())
        n += 1
    return n


class FaultProxy:
    """Forward GETs to ``upstream`` (an http:// endpoint), counting them per
    path and applying the faults of :attr:`faults` (path ``/{bucket}/{key}``
    -> dict(kind="status"|"cut"|"short", times=None|n, status=503))."""

    def __init__(self, upstream: str, delay_s: float = 0.0):
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.delay_s = delay_s
        self.faults: dict[str, dict] = {}
        self.gets: collections.Counter = collections.Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                proxy._handle(self)

        self.server = ThreadingHTTPServer((LOCALHOST, 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://{LOCALHOST}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def key_gets(self, bucket: str) -> dict[str, int]:
        """GETs per object key (the bucket prefix removed)."""
        with self.lock:
            return {p.split("?")[0].removeprefix(f"/{bucket}/"): n for p, n in self.gets.items()}

    def reset(self) -> None:
        with self.lock:
            self.gets.clear()

    def _take_fault(self, path: str) -> dict | None:
        with self.lock:
            self.gets[path] += 1
            fault = self.faults.get(path.split("?")[0])
            if fault is None:
                return None
            if fault.get("times") is not None:
                if fault["times"] <= 0:
                    return None
                fault["times"] -= 1
            return dict(fault)

    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        fault = self._take_fault(req.path)
        if self.delay_s:
            time.sleep(self.delay_s)
        if fault and fault["kind"] == "status":
            body = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>SlowDown</Code>"
                    b"<Message>Please reduce your request rate.</Message></Error>")
            req.send_response(fault.get("status", 503))
            req.send_header("Content-Type", "application/xml")
            req.send_header("Content-Length", str(len(body)))
            req.end_headers()
            req.wfile.write(body)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in req.headers.items()
                       if k.lower() not in ("connection", "keep-alive")}
            conn.request("GET", req.path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            status, up_headers = resp.status, resp.getheaders()
        finally:
            conn.close()
        length = len(body)
        if fault and fault["kind"] in ("cut", "short") and status == 200:
            body = body[: length // 2]
            if fault["kind"] == "short":
                length = len(body)
        req.send_response(status)
        for name, value in up_headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding",
                                    "keep-alive", "date", "server"):
                req.send_header(name, value)
        req.send_header("Content-Length", str(length))
        if fault and fault["kind"] == "cut":
            req.send_header("Connection", "close")
            req.close_connection = True
        req.end_headers()
        req.wfile.write(body)
