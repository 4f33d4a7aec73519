"""pages/media.py: an image a rerun replaced is kept MEDIA_GRACE_SECONDS before it is deleted (a browser that asks
for it late gets it, not a 404). Streamlit's own MediaFileManager with its in-memory storage, a fake clock."""
from streamlit.runtime.media_file_manager import MediaFileManager
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

from pages.media import keep_replaced_media

PNG = b"\x89PNG\r\n\x1a\n" + b"0" * 64


class Clock:
    now = 1000.0

    def __call__(self):
        return self.now


def image_url_is_served(manager, url: str) -> bool:
    return manager.read_file(url.rsplit("/", 1)[-1].split(".")[0]) is not None  # as the /media route reads it


def replace_image(manager, session: str, data: bytes) -> str:
    """What a rerun does: a new image at the same place of the page replaces the old one in the session's refs."""
    manager.clear_session_refs(session)
    return manager.add(data, "image/png", coordinates="1.(2).3")


def test_a_replaced_image_is_served_for_the_grace_period_then_deleted(monkeypatch):
    import streamlit.runtime.media_file_manager as mfm

    manager, clock = MediaFileManager(MemoryMediaFileStorage("/media")), Clock()
    keep_replaced_media(manager, seconds=60, clock=clock)
    keep_replaced_media(manager, seconds=60, clock=clock)  # a second start-up changes nothing
    monkeypatch.setattr(mfm, "_get_session_id", lambda: "student")
    old = replace_image(manager, "student", PNG + b"old")
    new = replace_image(manager, "student", PNG + b"new")  # the rerun: "old" is orphaned
    manager.remove_orphaned_files()  # another session ended, now
    assert image_url_is_served(manager, old) and image_url_is_served(manager, new)
    clock.now += 59
    manager.remove_orphaned_files()
    assert image_url_is_served(manager, old)  # a late fetch still gets it
    clock.now += 1
    manager.remove_orphaned_files()
    assert not image_url_is_served(manager, old) and image_url_is_served(manager, new)  # the one on the page stays


def test_an_image_referenced_again_starts_its_grace_anew(monkeypatch):
    import streamlit.runtime.media_file_manager as mfm

    manager, clock = MediaFileManager(MemoryMediaFileStorage("/media")), Clock()
    keep_replaced_media(manager, seconds=60, clock=clock)
    monkeypatch.setattr(mfm, "_get_session_id", lambda: "student")
    first = replace_image(manager, "student", PNG + b"a")
    replace_image(manager, "student", PNG + b"b")
    manager.remove_orphaned_files()  # "a" orphaned at t=1000
    clock.now += 50
    assert replace_image(manager, "student", PNG + b"a") == first  # shown again: referenced
    manager.remove_orphaned_files()
    replace_image(manager, "student", PNG + b"b")  # replaced again at t=1050
    manager.remove_orphaned_files()
    clock.now += 30  # 80 s after it was first orphaned, 30 s after the second time
    manager.remove_orphaned_files()
    assert image_url_is_served(manager, first)


def test_without_the_grace_streamlit_deletes_a_replaced_image_at_once(monkeypatch):
    """The reference: what a late fetch met before (why the grace exists)."""
    import streamlit.runtime.media_file_manager as mfm

    manager = MediaFileManager(MemoryMediaFileStorage("/media"))
    monkeypatch.setattr(mfm, "_get_session_id", lambda: "student")
    old = replace_image(manager, "student", PNG + b"old")
    replace_image(manager, "student", PNG + b"new")
    manager.remove_orphaned_files()
    assert not image_url_is_served(manager, old)
