"""``docker/nginx.conf`` passes ``nginx -t`` and says what SECURITY.md and OPERATIONS.md promise.

Skipped with the reason where nginx is not installed (``apt-get install nginx-light`` on
Debian); ``STALWART_REQUIRE=nginx`` makes its absence a failure instead. The same file in front
of two real app replicas is tested in ``tests/e2e/test_nginx_proxy.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import free_port, need
from tests.nginx_harness import NGINX_CONF, Nginx, nginx_problem

CONF = NGINX_CONF.read_text(encoding="utf-8")


def directive(name: str) -> list[str]:
    """The arguments of every uncommented ``name ...;`` line."""
    return [
        match.group(1).strip()
        for match in re.finditer(
            rf'^\s*{re.escape(name)}\s+((?:"[^"]*"|[^;"])*);', CONF, re.MULTILINE
        )
    ]


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    need("nginx", nginx_problem())
    nginx = Nginx(tmp_path, ["127.0.0.1:9", "127.0.0.1:10"], free_port(), free_port())
    nginx.write()
    done = nginx.check()
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_tls_is_1_2_and_1_3_with_the_intermediate_ciphers() -> None:
    assert directive("ssl_protocols") == ["TLSv1.2 TLSv1.3"]
    ciphers = directive("ssl_ciphers")[0].split(":")
    assert all(c.startswith("ECDHE-") and ("GCM" in c or "CHACHA20" in c) for c in ciphers)
    assert directive("ssl_session_tickets") == ["off"]
    assert directive("ssl_stapling") == []  # documented, commented out


def test_http_redirects_and_https_sends_hsts_once() -> None:
    assert directive("return") == ["301 https://$host$request_uri"]
    assert directive("add_header") == [
        'Strict-Transport-Security "max-age=31536000; includeSubDomains" always'
    ]
    assert directive("proxy_hide_header") == ["Strict-Transport-Security"]


def test_sticky_by_identity_cookie_with_an_address_fallback() -> None:
    assert directive("hash") == ["$stalwart_affinity consistent"]
    assert not re.search(r"^\s*ip_hash\s*;", CONF, re.MULTILINE)
    affinity = re.search(r"map \$cookie_stalwart_sid \$stalwart_affinity \{(.*?)\}", CONF, re.S)
    assert affinity is not None
    assert re.search(r"''\s+\$remote_addr;", affinity.group(1))


def test_proxy_headers_websockets_and_limits() -> None:
    headers = dict(value.split(None, 1) for value in directive("proxy_set_header"))
    assert headers["Upgrade"] == "$http_upgrade"
    assert headers["Connection"] == "$connection_upgrade"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    assert headers["X-Forwarded-For"] == "$remote_addr"
    assert headers["X-Trace-Id"] == "$request_id"
    assert headers["Host"] == "$http_host"
    # 10 MiB uploads (the app's default) plus Streamlit's 1 MiB multipart allowance.
    assert directive("client_max_body_size") == ["11m"]
    stream = re.search(r"location /_stcore/stream \{(.*?)\}", CONF, re.S)
    assert stream is not None
    assert "proxy_read_timeout 1h;" in stream.group(1)


def test_metrics_only_from_internal_networks() -> None:
    metrics = re.search(r"location = /metrics \{(.*?)\}", CONF, re.S)
    assert metrics is not None
    rules = re.findall(r"^\s*(allow|deny)\s+([^;]+);", metrics.group(1), re.M)
    assert rules[-1] == ("deny", "all")
    assert ("allow", "0.0.0.0/0") not in rules
    assert ("allow", "all") not in rules
