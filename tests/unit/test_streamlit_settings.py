"""The Streamlit settings every launcher gets from ``web.asgi.streamlit_limits``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit import config

from stalwart.core.config import load_config
from stalwart.web.asgi import streamlit_limits

SETTINGS = (
    "runner.fastReruns",
    "client.disableDataExport",
    "server.maxUploadSize",
    "client.showErrorDetails",
)


@pytest.fixture
def restore_streamlit_config() -> Iterator[None]:
    saved = {name: config.get_option(name) for name in SETTINGS}
    yield
    for name, value in saved.items():
        config.set_option(name, value)


@pytest.mark.usefixtures("restore_streamlit_config")
def test_one_script_thread_per_session_and_no_streamlit_downloads(tmp_path: Path) -> None:
    config.set_option("runner.fastReruns", True)  # Streamlit's default

    streamlit_limits(load_config(data_dir=tmp_path, upload_max_bytes=3 * 1024**2))

    # A full rerun must wait for the running script instead of starting a second thread
    # beside it: both would change the same form runtime (a lost commit, an IndexError, a
    # navigation undone; seen under load in test_zero_loss's navigation test).
    assert config.get_option("runner.fastReruns") is False
    assert config.get_option("client.disableDataExport") is True
    assert config.get_option("server.maxUploadSize") == 3


@pytest.mark.usefixtures("restore_streamlit_config")
def test_production_shows_no_tracebacks(tmp_path: Path) -> None:
    streamlit_limits(load_config(data_dir=tmp_path, environment="production", secret_key="s" * 40))

    assert config.get_option("client.showErrorDetails") == "none"
