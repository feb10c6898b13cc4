"""MNIST download against a local HTTP server on 127.0.0.1 serving small IDX files the test writes:
SHA256 checks, retries, timeouts, temp file + rename, corrupt cache files fetched again, mirrors."""
from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from typing import Dict, List

import numpy as np
import pytest

from pyfastgrad import datasets as ds

NAMES = list(ds.MNIST_SHA256)


class _Server:
    """Serves ``files``; ``plan[name]`` is a list of what to do on successive requests for it
    ('ok', 'corrupt', 'drop' (half the body, then close), '404', 'hang'); 'ok' once it runs out."""

    def __init__(self, files: Dict[str, bytes]):
        self.files = files
        self.plan: Dict[str, List[str]] = {}
        self.requests: List[str] = []
        self.release = threading.Event()
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                state.requests.append(name)
                todo = state.plan.get(name) or ["ok"]
                action = todo.pop(0) if state.plan.get(name) else "ok"
                body = state.files.get(name)
                if body is None or action == "404":
                    self.send_error(404)
                    return
                if action == "hang":
                    state.release.wait(30)
                    return
                if action == "corrupt":
                    body = body[:-1] + bytes([body[-1] ^ 0xFF])
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if action == "drop":
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _idx_files(n_train=6, n_test=4, seed=0) -> Dict[str, bytes]:
    rng = np.random.default_rng(seed)
    out = {}
    for name, n in zip(NAMES, (n_train, n_train, n_test, n_test)):
        if "images" in name:
            a = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
            raw = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in a.shape) + a.tobytes()
        else:
            a = rng.integers(0, 10, n, dtype=np.uint8)
            raw = (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + a.tobytes()
        out[name] = gzip.compress(raw, mtime=0)
    return out


def _refused_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def env(monkeypatch, tmp_path):
    """Isolated cache, no proxies for 127.0.0.1, and the known checksums of the small test files."""
    for var in ("PYFASTGRAD_DATA", "PYFASTGRAD_MNIST_MIRRORS", "PYFASTGRAD_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    files = _idx_files()
    for name, data in files.items():
        monkeypatch.setitem(ds.MNIST_SHA256, name, hashlib.sha256(data).hexdigest())
    ds.clear_cache()
    server = _Server(files)
    yield server, tmp_path
    server.close()
    ds.clear_cache()


def _listing(d):
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_download_verifies_renames_and_keeps_good_files(env):
    server, tmp = env
    dest = ds.download_mnist(tmp / "dl", mirrors=[server.url], quiet=True)
    assert dest == (tmp / "dl").resolve()
    assert _listing(dest) == sorted(NAMES)  # no temporary files left
    for name in NAMES:
        assert (dest / name).read_bytes() == server.files[name]
    assert sorted(server.requests) == sorted(NAMES)
    ds.download_mnist(dest, mirrors=[server.url], quiet=True)  # present and verified: nothing fetched
    assert len(server.requests) == 4
    ds.download_mnist(dest, mirrors=[server.url], quiet=True, force=True)
    assert len(server.requests) == 8
    (x, t), (xt, tt) = ds.load_mnist(dest)
    assert x.shape == (6, 784) and xt.shape == (4, 784)


def test_load_mnist_download_fills_the_user_cache(env, monkeypatch):
    server, tmp = env
    monkeypatch.setenv("PYFASTGRAD_MNIST_MIRRORS", server.url)
    with pytest.raises(FileNotFoundError, match="download=True"):
        ds.load_mnist()
    (x, _), _ = ds.load_mnist(download=True)
    assert x.shape == (6, 784)
    assert ds.find_mnist_dir() == ds.default_cache_dir().resolve()
    assert ds.default_cache_dir() == tmp / "xdg" / "pyfastgrad" / "mnist"
    data, source = ds.load_data()  # what `train` does: the cache, no new download
    assert source.name == "mnist" and len(server.requests) == 4


def test_corrupt_cache_file_is_reported_or_downloaded_again(env, monkeypatch):
    server, tmp = env
    monkeypatch.setenv("PYFASTGRAD_MNIST_MIRRORS", server.url)
    cache = ds.default_cache_dir()
    ds.download_mnist(quiet=True)
    victim = cache / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-5])  # truncated, e.g. by a crash of another tool
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        ds.load_mnist()
    ds.load_mnist(download=True)
    assert server.requests[4:] == ["t10k-labels-idx1-ubyte.gz"]  # only the bad file again
    assert victim.read_bytes() == server.files[victim.name]
    victim.write_bytes(b"junk")
    _, source = ds.load_data()  # train's path: fetched again as well
    assert source.name == "mnist" and victim.read_bytes() == server.files[victim.name]


def test_checksum_mismatch_is_retried_then_reported(env):
    server, tmp = env
    server.plan["train-labels-idx1-ubyte.gz"] = ["corrupt"]
    ds.download_mnist(tmp / "a", mirrors=[server.url], retries=1, quiet=True)
    assert server.requests.count("train-labels-idx1-ubyte.gz") == 2
    assert _listing(tmp / "a") == sorted(NAMES)
    server.plan["train-images-idx3-ubyte.gz"] = ["corrupt"] * 3
    with pytest.raises(ds.DownloadError, match=r"(?s)train-images-idx3-ubyte\.gz.*does not match"):
        ds.download_mnist(tmp / "b", mirrors=[server.url], retries=2, quiet=True)
    assert _listing(tmp / "b") == []  # nothing unverified or half-written is left


def test_dropped_connection_is_retried_and_leaves_no_partial_file(env):
    server, tmp = env
    server.plan["train-images-idx3-ubyte.gz"] = ["drop"]
    ds.download_mnist(tmp / "a", mirrors=[server.url], retries=1, quiet=True)
    assert (tmp / "a" / "train-images-idx3-ubyte.gz").read_bytes() == server.files["train-images-idx3-ubyte.gz"]
    server.plan["train-images-idx3-ubyte.gz"] = ["drop", "drop"]
    with pytest.raises(ds.DownloadError):
        ds.download_mnist(tmp / "b", mirrors=[server.url], retries=1, quiet=True)
    assert _listing(tmp / "b") == []


def test_http_error_moves_on_to_the_next_mirror(env):
    server, tmp = env
    other = _Server(server.files)
    try:
        for name in NAMES:
            server.plan[name] = ["404"]
        ds.download_mnist(tmp / "dl", mirrors=[server.url, other.url], retries=2, quiet=True)
        assert sorted(server.requests) == sorted(NAMES)  # one try each: a 404 is not retried
        assert sorted(other.requests) == sorted(NAMES)
    finally:
        other.close()


def test_unreachable_mirror_is_skipped_and_reported(env):
    server, tmp = env
    dead = _refused_url()
    ds.download_mnist(tmp / "dl", mirrors=[dead, server.url], quiet=True)
    assert sorted(server.requests) == sorted(NAMES)
    with pytest.raises(ds.DownloadError) as info:
        ds.download_mnist(tmp / "none", mirrors=[dead], quiet=True)
    assert "cannot connect" in str(info.value) and "cannot connect" in info.value.reason
    assert "PYFASTGRAD_DATA" in str(info.value)


def test_a_hanging_server_does_not_hang_the_download(env):
    server, tmp = env
    for name in NAMES:
        server.plan[name] = ["hang"] * 5
    result = {}

    def run():
        try:
            ds.download_mnist(tmp / "dl", mirrors=[server.url], timeout=(2.0, 0.5), retries=3, quiet=True)
        except ds.DownloadError as exc:
            result["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)  # a guard against a hang, not a speed check
    assert not t.is_alive()
    err = result["error"]
    assert "stalled" in err.reason
    assert server.requests == ["train-images-idx3-ubyte.gz"]  # a stalled mirror is not tried again
    assert _listing(tmp / "dl") == []


def test_load_data_without_network_uses_the_shipped_subset(env, monkeypatch):
    _, tmp = env
    monkeypatch.setenv("PYFASTGRAD_MNIST_MIRRORS", _refused_url())
    with pytest.warns(ds.DatasetFallbackWarning) as rec:
        ((x, t), (xt, tt)), source = ds.load_data()
    assert source.name == "mnist-subset" and x.shape == (12000, 784) and xt.shape == (2000, 784)
    note = str(rec[0].message)
    assert note == source.note and "\n" not in note
    assert "could not be downloaded: cannot connect" in note and "subset shipped with pyfastgrad" in note
    assert _listing(ds.default_cache_dir()) == []


def test_bad_arguments(env):
    with pytest.raises(ValueError, match="retries"):
        ds.download_mnist(env[1] / "dl", mirrors=[env[0].url], retries=-1)
    with pytest.raises(ds.DownloadError, match="no MNIST mirrors"):
        ds.download_mnist(env[1] / "dl", mirrors=[])
