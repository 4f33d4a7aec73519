"""cnn.sessions: one key for all tabs of a browser (from Streamlit's XSRF cookie), and which session owns a run."""
from cnn.sessions import XSRF_COOKIE, SessionRegistry, browser_key_from


def test_the_session_registry_maps_owners_to_sessions():
    connected = {"session-a"}
    registry = SessionRegistry(connected=lambda session_id: session_id in connected)
    registry.register("owner-a", "session-a")
    assert registry.session_of("owner-a") == "session-a" and registry.session_of("owner-b") is None
    assert registry.alive("owner-a")
    assert registry.alive("owner-b")  # a run queued outside a page (the CLI, a test) is never dropped
    connected.clear()  # owner-a's tab is closed
    assert not registry.alive("owner-a") and registry.alive("owner-b")


def _xsrf_cookie(token: bytes, mask: bytes) -> str:
    """Streamlit's cookie format, written out here: 2|hex(mask)|hex(token XOR mask, repeated)|timestamp."""
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(token))
    return f"2|{mask.hex()}|{masked.hex()}|1700000000"


def test_every_tab_of_one_browser_gets_the_same_key_and_other_browsers_another():

    token = bytes(range(16))
    tab_one = {XSRF_COOKIE: _xsrf_cookie(token, b"\x01\x02\x03\x04")}
    tab_two = {XSRF_COOKIE: _xsrf_cookie(token, b"\xaa\xbb\xcc\xdd")}  # same browser, re-masked on page load
    assert tab_one[XSRF_COOKIE] != tab_two[XSRF_COOKIE]
    assert browser_key_from(tab_one, "session-1") == browser_key_from(tab_two, "session-2")
    other_browser = {XSRF_COOKIE: _xsrf_cookie(bytes(16), b"\x01\x02\x03\x04")}
    assert browser_key_from(other_browser, "session-3") != browser_key_from(tab_one, "session-1")
    # No cookie (XSRF off) or a forged one: one key per session, never one shared by all such sessions.
    for cookies in ({}, {XSRF_COOKIE: "nonsense"}, {XSRF_COOKIE: "2|zz|zz|1"}, {XSRF_COOKIE: 42}):
        assert browser_key_from(cookies, "session-4") != browser_key_from(cookies, "session-5")
    assert token.hex() not in browser_key_from(tab_one, "session-1")  # the token itself is never shown


def test_browser_key_reads_the_cookie_streamlit_itself_writes():
    from streamlit.web.server.starlette.starlette_app_utils import generate_xsrf_token_string


    token = bytes(range(100, 116))
    first, second = generate_xsrf_token_string(token), generate_xsrf_token_string(token)
    assert first != second  # a new mask each time
    assert browser_key_from({XSRF_COOKIE: first}, "a") == browser_key_from({XSRF_COOKIE: second}, "b")
    assert browser_key_from({XSRF_COOKIE: first}, "a").startswith("browser-")


# ---------------------------------------------------------------- Draw
