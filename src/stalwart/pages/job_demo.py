"""The job demo page (not built yet): says what it will do."""

from __future__ import annotations

from stalwart.pages.base import ComingSoonPage


class JobDemoPage(ComingSoonPage):
    """Will start background jobs and follow their progress."""

    slug = "job-demo"
    title = "Job demo"
    icon = ":material/pending_actions:"
    summary = "Long-running work as background jobs."
    features = (
        "Start a job and follow its progress; leave the page and come back to it.",
        "Jobs that survive a server restart and run again if their worker dies.",
        "Cancel a running job, and see its result or error when it ends.",
    )
