"""Who is who on a class server: a key every tab of one browser shares, and which session owns a run.

Plain logic with no Streamlit import: the pages pass in the cookies and the runtime's answers.
"""
from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Callable

XSRF_COOKIE = "_streamlit_xsrf"  # Streamlit's own XSRF cookie: one per browser, shared by its tabs


def xsrf_token(cookie: str) -> bytes | None:
    """The token inside Streamlit's XSRF cookie, "2|mask|masked token|time" (hex), or None if it is not one.

    Streamlit re-masks the same token with a new random mask on every page load, so two tabs of one browser
    send different cookie values holding the same token.
    """
    parts = cookie.strip("\"'").split("|") if isinstance(cookie, str) else []
    if len(parts) != 4 or parts[0] != "2":
        return None
    try:
        mask, masked = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        return None
    if len(mask) != 4 or not masked:
        return None
    return bytes(byte ^ mask[i % 4] for i, byte in enumerate(masked))


def browser_key_from(cookies: Mapping, session_id: str) -> str:
    """A key that every tab of one browser shares (a hash of its XSRF token), else one for this session alone.

    Only a cap, not an identity: a forged client can mint a new cookie per connection and look like many
    browsers, which is why the job manager's server-wide queue cap still holds whatever this returns.
    """
    try:
        token = xsrf_token(cookies.get(XSRF_COOKIE))
    except Exception:  # an odd cookie jar (no .get, a non-string value) must not stop the page
        token = None
    if token:
        return "browser-" + hashlib.sha256(token).hexdigest()[:16]
    return "session-" + hashlib.sha256(session_id.encode()).hexdigest()[:16]


class SessionRegistry:
    """Which Streamlit session each owner id belongs to, so the job manager can ask whether it is still connected.

    Owners stay a random id in session_state (tests with AppTest all share one session id); the registry maps
    them to the session that made them. One small entry per session ever opened: a few hundred bytes each.
    """

    def __init__(self, connected: Callable[[str], bool] = lambda session_id: True):
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}
        self._connected = connected  # whether a session id is connected now (the app asks Streamlit's runtime)

    def register(self, owner: str, session_id: str) -> None:
        with self._lock:
            self._sessions[owner] = session_id

    def session_of(self, owner: str) -> str | None:
        with self._lock:
            return self._sessions.get(owner)

    def alive(self, owner: str) -> bool:
        """False only when owner's session is known and no longer connected (safe from any thread)."""
        session_id = self.session_of(owner)
        return session_id is None or self._connected(session_id)


def session_tag(owner: str) -> str:
    """Who started a run, in a form safe to show on a projector: "session 3f2a".

    A hash of the owner id, cut to 4 hex digits: it tells sessions apart in a class, but gives away neither the
    owner id (which would let a forged client act as that session) nor a network address.
    """
    return "session " + hashlib.sha256(str(owner).encode()).hexdigest()[:4]
