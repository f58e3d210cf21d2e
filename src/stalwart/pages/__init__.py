"""The app's pages and their registry.

``PAGES`` lists every page in navigation order, keyed by slug; ``shell.py`` (the script that
``st.App`` runs) renders the one the user is on.
"""

from __future__ import annotations

from typing import Final

from stalwart.pages.analytics import AnalyticsPage
from stalwart.pages.base import ComingSoonPage, Page
from stalwart.pages.form_demo import FormDemoPage
from stalwart.pages.home import HomePage
from stalwart.pages.import_export import ImportExportPage
from stalwart.pages.job_demo import JobDemoPage
from stalwart.pages.jobs import JobsPage
from stalwart.pages.settings import SettingsPage
from stalwart.pages.system import SystemPage
from stalwart.pages.users import UsersPage


def _registry(*pages: Page) -> dict[str, Page]:
    registry = {page.slug: page for page in pages}
    if len(registry) != len(pages):
        raise ValueError(f"duplicate page slugs in {pages!r}")
    return registry


PAGES: Final[dict[str, Page]] = _registry(
    HomePage(),
    FormDemoPage(),
    JobDemoPage(),
    JobsPage(),
    ImportExportPage(),
    SettingsPage(),
    UsersPage(),
    AnalyticsPage(),
    SystemPage(),
)
DEFAULT_PAGE: Final = HomePage.slug

__all__ = ["DEFAULT_PAGE", "PAGES", "ComingSoonPage", "Page"]
