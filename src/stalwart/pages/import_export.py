"""The import / export page (not built yet): says what it will do."""

from __future__ import annotations

from stalwart.pages.base import ComingSoonPage


class ImportExportPage(ComingSoonPage):
    """Will move data in and out of the app as files."""

    slug = "import-export"
    title = "Import / export"
    icon = ":material/swap_horiz:"
    summary = "Moving data in and out of the app."
    features = (
        "Import a CSV or JSON file, with a preview and a report of the rows that do not fit.",
        "Export your data as CSV or JSON.",
        "Large files handled as background jobs, so the page stays responsive.",
    )
