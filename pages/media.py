"""Keep the images a rerun replaced for a while, so a browser that asks for one late gets it, not a 404.

Streamlit serves st.image through /media URLs. When a rerun replaces an image, the old file is "orphaned" and the
next session that ends anywhere on the server deletes every orphaned file at once: a student whose browser was
still fetching the replaced image (a slow Wi-Fi, a busy laptop, a slider dragged fast) got a broken image and a
404 in the console. Here an orphaned file is deleted only once it has been orphaned for MEDIA_GRACE_SECONDS.
Streamlit 1.67's MediaFileManager (pinned in requirements.txt) decides what to delete in one method,
_get_inactive_file_ids, called with its lock held; this wraps that method on the server's one manager.
"""
from __future__ import annotations

import time
from typing import Callable

MEDIA_GRACE_SECONDS = 60.0


def keep_replaced_media(manager, seconds: float = MEDIA_GRACE_SECONDS,
                        clock: Callable[[], float] = time.monotonic) -> None:
    """Make manager delete a file no session references only after it has been unreferenced for seconds."""
    if getattr(manager, "_cnn_media_grace", False):
        return  # once per manager, however many times the app starts up
    all_inactive = manager._get_inactive_file_ids  # noqa: SLF001 - see the module's docstring
    orphaned_since: dict[str, float] = {}

    def inactive_long_enough() -> set[str]:
        now, inactive = clock(), all_inactive()
        for file_id in [f for f in orphaned_since if f not in inactive]:
            del orphaned_since[file_id]  # referenced again, or deleted
        return {f for f in inactive if now - orphaned_since.setdefault(f, now) >= seconds}

    manager._get_inactive_file_ids = inactive_long_enough
    manager._cnn_media_grace = True
