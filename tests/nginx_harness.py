"""Run ``docker/nginx.conf`` in tests: a throwaway certificate, local ports and upstreams.

The file is tested as it is shipped, with only what a test machine must change substituted:
the certificate paths, the listening ports (on 127.0.0.1), the replicas in
``upstream stalwart`` (hostnames like ``app1`` do not resolve here, and nginx resolves them at
start), the temporary directories (into the test's own), the workers' user when run as root,
and, for nginx older than 1.25.1 (Debian 12 has 1.22), the ``http2 on;`` directive it does
not know. Every substitution must match, so a change of the file that the harness no longer
understands fails the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "docker" / "nginx.conf"
START_TIMEOUT_S = 20  # a bound so that a hung nginx fails the test; not a performance claim

_UPSTREAM_SERVER_RE = re.compile(r"^(\s*)server app\d+:8501( [^;]*)?;\n", re.MULTILINE)


@cache
def nginx_binary() -> str | None:
    """The nginx executable (``/usr/sbin`` is often not on a non-root PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@cache
def nginx_problem() -> str | None:
    """Why nginx cannot be run here, or None."""
    if nginx_binary() is None:
        return "the nginx binary is not installed (apt-get install nginx-light)"
    if shutil.which("openssl") is None:
        return "openssl is not installed (needed for a throwaway certificate)"
    return None


@cache
def nginx_version() -> tuple[int, ...]:
    """``nginx -v`` as numbers, e.g. (1, 22, 1)."""
    binary = nginx_binary()
    assert binary is not None
    done = subprocess.run([binary, "-v"], capture_output=True, text=True, check=True)
    match = re.search(r"nginx/(\d+(?:\.\d+)*)", done.stderr + done.stdout)
    assert match, f"unexpected `nginx -v` output: {done.stderr!r}"
    return tuple(int(part) for part in match.group(1).split("."))


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for 127.0.0.1/localhost: (certificate, key)."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"expected {old!r} once in {NGINX_CONF.name}"
    return text.replace(old, new)


def render(
    *, cert: Path, key: Path, upstreams: list[str], http_port: int, https_port: int, temp: Path
) -> str:
    """``docker/nginx.conf`` for this machine (see the module's docstring for what changes)."""
    text = NGINX_CONF.read_text(encoding="utf-8")
    text = _replace_once(text, "/etc/nginx/tls/fullchain.pem", str(cert))
    text = _replace_once(text, "/etc/nginx/tls/privkey.pem", str(key))
    text = _replace_once(text, "        listen 80;\n", f"        listen 127.0.0.1:{http_port};\n")
    text = _replace_once(text, "        listen [::]:80;\n", "")
    text = _replace_once(
        text, "        listen 443 ssl;\n", f"        listen 127.0.0.1:{https_port} ssl;\n"
    )
    text = _replace_once(text, "        listen [::]:443 ssl;\n", "")

    servers = list(_UPSTREAM_SERVER_RE.finditer(text))
    assert servers, "no `server appN:8501` lines in upstream stalwart"
    indent, params = servers[0].group(1), servers[0].group(2) or ""
    ours = "".join(f"{indent}server {address}{params};\n" for address in upstreams)
    text = text[: servers[0].start()] + ours + _UPSTREAM_SERVER_RE.sub("", text[servers[0].end() :])

    if nginx_version() < (1, 25, 1):
        text = re.sub(r"^\s*http2 on;.*\n", "", text, count=1, flags=re.MULTILINE)
    if os.geteuid() == 0:
        # As root, nginx's workers run as "nobody", who cannot enter pytest's 0700 temporary
        # directories (request bodies are buffered there). The Docker image has its own user.
        text = _replace_once(
            text, "\nworker_processes auto;\n", "\nuser root;\nworker_processes auto;\n"
        )
    temp_paths = "".join(
        f"    {kind}_temp_path {temp / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return _replace_once(text, "\nhttp {\n", "\nhttp {\n" + temp_paths)


def nginx_command(conf: Path, workdir: Path, *extra: str) -> list[str]:
    """nginx with ``conf``, its prefix, pid and startup error log under ``workdir``."""
    binary = nginx_binary()
    assert binary is not None
    return [
        binary,
        "-c", str(conf),
        "-p", str(workdir),
        "-e", str(workdir / "error.log"),
        "-g", f"pid {workdir / 'nginx.pid'};" + (" daemon off;" if "-t" not in extra else ""),
        *extra,
    ]  # fmt: skip


@dataclass
class Nginx:
    """``docker/nginx.conf`` running in the foreground in front of ``upstreams``."""

    workdir: Path
    upstreams: list[str]
    http_port: int
    https_port: int
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def log_path(self) -> Path:
        """nginx's stdout (the access log) and stderr."""
        return self.workdir / "nginx.out"

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def write(self) -> Path:
        """Write the rendered config (and a certificate); return its path."""
        tls = self.workdir / "tls"
        temp = self.workdir / "temp"
        for directory in (tls, temp, self.workdir / "logs"):
            directory.mkdir(parents=True, exist_ok=True)
        cert, key = make_certificate(tls)
        self.conf.write_text(
            render(
                cert=cert,
                key=key,
                upstreams=self.upstreams,
                http_port=self.http_port,
                https_port=self.https_port,
                temp=temp,
            ),
            encoding="utf-8",
        )
        return self.conf

    def check(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t`` on the written config."""
        return subprocess.run(
            nginx_command(self.conf, self.workdir, "-t"), capture_output=True, text=True
        )

    def start(self) -> Nginx:
        """Run nginx until :meth:`stop`; return once it accepts TLS connections."""
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                nginx_command(self.conf, self.workdir), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"nginx exited with {self.process.returncode}:\n{self.logs()}")
            done = subprocess.run(
                ["openssl", "s_client", "-connect", f"127.0.0.1:{self.https_port}"],
                input="",
                capture_output=True,
                text=True,
            )
            if "BEGIN CERTIFICATE" in done.stdout:
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"nginx did not listen within {START_TIMEOUT_S}s:\n{self.logs()}")

    def stop(self) -> None:
        """Stop nginx (SIGTERM: fast shutdown) and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=START_TIMEOUT_S)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def access_log(self) -> list[str]:
        """The access log lines so far (nginx writes them to stdout)."""
        return [line for line in self.logs().splitlines() if " trace=" in line]
