"""The form demo page (not built yet): says what it will do."""

from __future__ import annotations

from stalwart.pages.base import ComingSoonPage


class FormDemoPage(ComingSoonPage):
    """Will show a form whose input survives refreshes, restarts and database hiccups."""

    slug = "form-demo"
    title = "Form demo"
    icon = ":material/edit_note:"
    summary = "A form whose input is never lost."
    features = (
        "Every field saved as you type and restored after a refresh, a closed tab or a "
        "server restart.",
        "**Save**, **Apply** and **Reset**, with undo and redo.",
        "Conflict handling: when someone else saved first, you see both versions and choose "
        "which to keep.",
    )
