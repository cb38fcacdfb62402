"""Real local servers on loopback for tests, benchmarks and the demo.

- :class:`NginxServer`: static files with HTTP Range support and a parsed access log
  (requests and bytes are counted on the server side), optionally answering every
  request after a fixed delay (cloud latency at no CPU cost to the measured code).
- :class:`MotoServer`: an S3 API (moto) with fake credentials.
- :class:`LatencyProxy`: a reverse proxy adding a fixed delay per request, run as a
  separate process so it does not compete with the measured code for the GIL.

Every server starts on a free port, is stopped by its PID (never by name), and is
stopped at interpreter exit if the caller forgot.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_file(name: str) -> Any:
    """A temporary file for a server's output.

    Never a pipe: a server that logs every request (moto, rustac) blocks forever once
    a pipe nobody reads is full.
    """
    return tempfile.NamedTemporaryFile(prefix=f"rasteret-{name}-", suffix=".log", delete=False)


def _wait_for_port(port: int, process: subprocess.Popen, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = getattr(process, "log_path", None)
            error = Path(output).read_text(errors="replace")[-4000:] if output else ""
            raise RuntimeError(f"{name} exited with status {process.returncode}: {error}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    _stop_process(process)
    raise RuntimeError(f"{name} did not listen on port {port} within {timeout} s")


def start_process(command: list[str], name: str) -> subprocess.Popen:
    """Start a server process whose output goes to a temporary log file."""
    log = log_file(name)
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    process.log_path = log.name  # type: ignore[attr-defined]
    return process


def _stop_process(process: subprocess.Popen | None) -> None:
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    log_path = getattr(process, "log_path", None)
    if log_path:
        Path(log_path).unlink(missing_ok=True)


class _Server:
    """Start/stop plumbing shared by the servers: context manager and atexit."""

    _process: subprocess.Popen | None = None

    def start(self) -> Any:  # pragma: no cover - overridden
        raise TypeError("subclasses start themselves")

    def stop(self) -> None:
        """Stop the server process (by PID)."""
        _stop_process(self._process)
        self._process = None

    def restart(self, downtime: float = 0.0) -> None:
        """Stop the server and, after ``downtime`` seconds, run the same command again
        on the same port: a store restarting under its clients. Connections in flight
        break; new ones are refused until it listens again. nginx keeps its files and
        log; moto comes back empty; the proxy's fault counts start again.

        Raises:
            RuntimeError: The server is not running, or did not listen again.
        """
        if self._process is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        command = list(self._process.args)
        address = getattr(self, "url", "") or getattr(self, "endpoint", "")
        port = int(address.rsplit(":", 1)[1])
        _stop_process(self._process)
        time.sleep(downtime)
        self._process = start_process(command, type(self).__name__)
        _wait_for_port(port, self._process, type(self).__name__)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@dataclass(frozen=True)
class AccessRecord:
    """One request as nginx logged it."""

    method: str
    path: str
    status: int
    range: str
    body_bytes: int
    #: When nginx finished the request and how long it took, by nginx's own clock
    #: (seconds, millisecond resolution): requests overlap when these intervals do.
    finished: float = 0.0
    seconds: float = 0.0

    @property
    def started(self) -> float:
        """When nginx read the request (by its clock)."""
        return self.finished - self.seconds


_LOG_FIELDS = ("$request_method", "$uri", "$status", "$http_range", "$body_bytes_sent",
               "$msec", "$request_time")
_LOG_FORMAT = "\\t".join(_LOG_FIELDS)


#: Where Debian's libnginx-mod-http-echo puts the module that provides ``echo_sleep``.
_ECHO_MODULES = ("/usr/lib/nginx/modules/ngx_http_echo_module.so",
                 "/usr/share/nginx/modules/ngx_http_echo_module.so")


def nginx_echo_module() -> str:
    """The echo module's path (needed for ``NginxServer(delay=...)``), or a RuntimeError
    saying how to install it."""
    for path in _ECHO_MODULES:
        if Path(path).exists():
            return path
    raise RuntimeError("nginx's echo module is not installed: run `make servers` "
                       "(it installs Debian's libnginx-mod-http-echo)")


def nginx_binary() -> str:
    """The nginx executable, or a RuntimeError saying how to install it."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if not found:
        raise RuntimeError("nginx is not installed: run `make test` (it installs nginx)")
    return found


class NginxServer(_Server):
    """nginx serving ``root`` with Range support on a free loopback port.

    With ``delay``, every request is answered ``delay`` seconds late: nginx's event
    loop holds it on a timer (the echo module's ``echo_sleep``), then serves the file
    as usual. Unlike a proxy process this costs no CPU, so on a small machine the
    latency does not steal cycles from the readers being measured.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        root: The served folder.
        delay: Seconds added to every request (0: none).
        access_log_path: The access log (tab-separated, one request per line).
    """

    def __init__(self, root: str | os.PathLike, *, delay: float = 0.0) -> None:
        self.root = Path(root).resolve()
        self.delay = delay
        self.url = ""
        self._dir = Path(tempfile.mkdtemp(prefix="rasteret-nginx-"))
        self.access_log_path = self._dir / "access.log"

    def start(self) -> NginxServer:
        """Write a private config and start nginx in the foreground (as a child)."""
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        temp = self._dir / "tmp"
        temp.mkdir(exist_ok=True)
        module, location = "", "location / { }"
        if self.delay > 0:
            module = f"load_module {nginx_echo_module()};"
            location = (f"location / {{ echo_sleep {self.delay:.3f}; echo_exec @file; }}\n"
                        "        location @file { }")
        config = f"""
{module}
daemon off;
master_process off;
worker_processes 1;
pid {self._dir}/nginx.pid;
error_log {self._dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    log_format rasteret "{_LOG_FORMAT}";
    sendfile on;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_requests 100000;
    keepalive_timeout 120s;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    types {{ image/tiff tif tiff; application/json json; }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        root {self.root};
        access_log {self.access_log_path} rasteret;
        {location}
    }}
}}
"""
        (self._dir / "nginx.conf").write_text(config)
        self.access_log_path.touch()
        self._process = start_process(
            [nginx_binary(), "-p", str(self._dir), "-c", str(self._dir / "nginx.conf")], "nginx"
        )
        atexit.register(self.stop)
        _wait_for_port(port, self._process, "nginx")
        return self

    def serve_scenes(self, scenes: Any, folder: str) -> Any:
        """Copy each scene's files under ``folder/<scene id>/`` of the root and return
        ``href(scene, path)``, the http URL nginx serves such a file at."""
        root = Path(self.root) / folder
        for scene in scenes:
            for path in scene.files.values():
                target = root / scene.id / Path(path).name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, target)
        return lambda scene, path: f"{self.url}/{folder}/{scene.id}/{Path(path).name}"

    def requests(self, *, settled: bool = True) -> list[AccessRecord]:
        """Every request logged since the last :meth:`clear_log`.

        nginx writes a request's log line after the response has gone out, so a
        client can be done before its last line is written: by default the log is
        read once it has stopped growing for a moment (``settled=False``: as it is
        now, for polling while requests are in flight).
        """
        text = self._settled_log() if settled else self.access_log_path.read_text()
        records = []
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) != len(_LOG_FIELDS):
                continue
            method, path, status, byte_range, body, finished, seconds = parts
            records.append(AccessRecord(method, path, int(status),
                                        "" if byte_range == "-" else byte_range, int(body),
                                        float(finished), float(seconds)))
        return records

    def _settled_log(self, quiet: float = 0.1, timeout: float = 3.0) -> str:
        deadline = time.monotonic() + timeout
        text = self.access_log_path.read_text()
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(0.02)
            again = self.access_log_path.read_text()
            if again != text:
                text, stable_since = again, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
        return text

    def count(self, path_prefix: str = "/", *, settled: bool = True) -> int:
        """Requests whose path starts with ``path_prefix`` (see :meth:`requests`)."""
        return sum(1 for r in self.requests(settled=settled) if r.path.startswith(path_prefix))

    def bytes_sent(self, path_prefix: str = "/") -> int:
        """Body bytes sent for paths starting with ``path_prefix``."""
        return sum(r.body_bytes for r in self.requests() if r.path.startswith(path_prefix))

    def cpu_seconds(self) -> float:
        """CPU time nginx has used so far (user + system; Linux /proc)."""
        fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def clear_log(self) -> None:
        """Forget logged requests (truncates the log in place; nginx keeps appending)."""
        with open(self.access_log_path, "r+") as log:
            log.truncate(0)

    def stop(self) -> None:
        """Stop nginx and remove its private folder."""
        super().stop()
        shutil.rmtree(self._dir, ignore_errors=True)


class MotoServer(_Server):
    """moto's S3 server on a free loopback port with fake credentials.

    Attributes:
        endpoint: ``http://127.0.0.1:PORT``.
        region: ``us-east-1``.
        access_key_id, secret_access_key: Fake keys moto accepts (auth is off).
    """

    region = "us-east-1"
    access_key_id = "testing-access-key"
    secret_access_key = "testing-secret-key"

    def __init__(self) -> None:
        self.endpoint = ""

    def start(self) -> MotoServer:
        """Start ``moto_server`` and wait until it answers."""
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        # The moto installed beside this Python first (the venv's), then PATH's.
        beside = Path(sys.executable).with_name("moto_server")
        binary = str(beside) if beside.exists() else shutil.which("moto_server") or str(beside)
        if not Path(binary).exists():
            raise RuntimeError("moto is not installed: run `make test` (it installs .[dev])")
        self._process = start_process([binary, "-H", "127.0.0.1", "-p", str(port)], "moto")
        atexit.register(self.stop)
        _wait_for_port(port, self._process, "moto_server")
        return self

    def boto3_client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=self.region,
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str, public: bool = False) -> None:
        """Create a bucket (``public`` gives it a public-read ACL)."""
        client = self.boto3_client()
        client.create_bucket(Bucket=name, **({"ACL": "public-read"} if public else {}))

    def upload(self, bucket: str, key: str, data: bytes | str | os.PathLike,
               public_read: bool = False) -> None:
        """Upload bytes or a file; ``public_read`` allows anonymous reads of it."""
        body = data if isinstance(data, bytes) else Path(data).read_bytes()
        extra = {"ACL": "public-read"} if public_read else {}
        self.boto3_client().put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def backend(self) -> Any:
        """A rasteret backend on this server with its fake keys, no obstore retries
        and a short retry policy, so a failing test fails in seconds."""
        import datetime as dt

        from rasteret.io.backend import RetryPolicy, create_backend

        return create_backend(
            default_s3_config={"endpoint": self.endpoint, "region": "us-east-1",
                               "aws_access_key_id": self.access_key_id,
                               "aws_secret_access_key": self.secret_access_key},
            retry_config={"max_retries": 0, "retry_timeout": dt.timedelta(seconds=2)},
            retries=RetryPolicy(attempts=2, budget=5))

    def reset(self) -> None:
        """Delete every bucket and object."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def enable_iam(self, users: dict[str, list[str] | None], *,
                   session_for: str | None = None) -> dict[str, tuple[str, ...]]:
        """Create IAM users, then turn moto's authentication on (it cannot be undone).

        Args:
            users: User name -> the actions its policy allows (e.g.
                ``["s3:GetObject", "s3:ListBucket"]``), or None for a user with no
                policy (every request is denied).
            session_for: A user whose allowed actions a role also gets: its temporary
                credentials (with a session token, as STS, SSO and Earthdata hand
                out) come back under ``"session"``.

        Returns:
            Name -> ``(key id, secret)``, and ``"session"`` -> ``(key id, secret,
            token)`` with ``session_for``.
        """
        import boto3

        admin = {"endpoint_url": self.endpoint, "region_name": self.region,
                 "aws_access_key_id": self.access_key_id,
                 "aws_secret_access_key": self.secret_access_key}
        iam = boto3.client("iam", **admin)
        keys: dict[str, tuple[str, ...]] = {}
        for number, (user, actions) in enumerate(users.items()):
            iam.create_user(UserName=user)
            if actions is not None:
                if user == session_for:
                    actions = [*actions, "sts:AssumeRole"]
                document = json.dumps({
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}],
                })
                policy = iam.create_policy(PolicyName=f"policy-{number}",
                                           PolicyDocument=document)["Policy"]["Arn"]
                iam.attach_user_policy(UserName=user, PolicyArn=policy)
                if user == session_for:
                    iam.create_role(RoleName="session-role",
                                    AssumeRolePolicyDocument=json.dumps({
                                        "Version": "2012-10-17",
                                        "Statement": [{"Effect": "Allow",
                                                       "Principal": {"AWS": "*"},
                                                       "Action": "sts:AssumeRole"}],
                                    }))
                    iam.attach_role_policy(RoleName="session-role", PolicyArn=policy)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            keys[user] = (key["AccessKeyId"], key["SecretAccessKey"])
        if session_for is not None:
            sts = boto3.client("sts", endpoint_url=self.endpoint, region_name=self.region,
                               aws_access_key_id=keys[session_for][0],
                               aws_secret_access_key=keys[session_for][1])
            session = sts.assume_role(RoleArn="arn:aws:iam::123456789012:role/session-role",
                                      RoleSessionName="rasteret-test")["Credentials"]
            keys["session"] = (session["AccessKeyId"], session["SecretAccessKey"],
                               session["SessionToken"])
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset-auth", data=b"0",
                                         headers={"Content-Type": "text/plain"}, method="POST")
        urllib.request.urlopen(request, timeout=10).close()
        return keys


class LatencyProxy(_Server):
    """A loopback reverse proxy adding ``delay`` seconds before each request, and
    failing ``fault_rate`` of them with one of ``faults`` (see latency_proxy).

    Runs ``python -m testbed.latency_proxy`` as a child process.

    Attributes:
        url: The proxy's ``http://127.0.0.1:PORT`` (same paths as the target).
    """

    def __init__(self, target_url: str, *, delay: float = 0.02, fault_rate: float = 0.0,
                 faults: tuple[str, ...] = ("drop", "503", "truncate", "slow"),
                 seed: int = 0) -> None:
        self.target_url = target_url
        self.delay = delay
        self.fault_rate = fault_rate
        self.faults = faults
        self.seed = seed
        self.url = ""

    def start(self) -> LatencyProxy:
        """Start the proxy process and wait until it listens."""
        port = free_port()
        target = self.target_url.split("://", 1)[1].rstrip("/")
        self._process = start_process(
            [sys.executable, "-m", "testbed.latency_proxy", "--target", target,
             "--delay", str(self.delay), "--port", str(port),
             "--fault-rate", str(self.fault_rate), "--faults", ",".join(self.faults),
             "--seed", str(self.seed)], "latency-proxy",
        )
        atexit.register(self.stop)
        _wait_for_port(port, self._process, "latency proxy")
        self.url = f"http://127.0.0.1:{port}"
        return self

    def injected(self) -> dict[str, int]:
        """Faults injected so far, by kind (read from the proxy's log)."""
        counts: dict[str, int] = {}
        log_path = getattr(self._process, "log_path", None)
        if log_path and Path(log_path).exists():
            for line in Path(log_path).read_text().splitlines():
                if line.startswith("fault "):
                    kind = line.split(" ", 1)[1]
                    counts[kind] = counts.get(kind, 0) + 1
        return counts
