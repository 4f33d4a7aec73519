"""A freshly started server: its first visitor reads that it is starting, then sees the app's own menu and never a
menu of the files in pages/; a first request for /draw says the same, then shows the Draw page with the app's own
navigation.

Streamlit treats a folder named pages/ as old-style pages until app.py has called st.navigation once; a first
request for a page's URL after a restart used to run the page alone, with the file names as the menu. The shared
app_url server has served other pages already, so this test starts its own.
"""

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import start_app, stop_app
from tests.test_browser_app import PAGES, watch_errors

pytestmark = pytest.mark.browser


@pytest.fixture
def cold_app_url(tmp_path):
    """A server of its own that has answered nothing but its health check."""
    process, url = start_app(tmp_path)
    yield url
    stop_app(process)


# Records the text of every menu link the page ever shows, from before its first script: Streamlit's own menu of
# the files in pages/ showed for ~4 s on a fresh server, until app.py's st.navigation replaced it.
# It also records the alerts the page showed (a fresh server's first run says it is starting while PyTorch loads).
MENU_SEEN_JS = """window.menuSeen = new Set(); window.alertsSeen = new Set();
new MutationObserver(() => {
  document.querySelectorAll('[data-testid=stSidebarNavLink]').forEach(link => window.menuSeen.add(link.innerText.trim()));
  document.querySelectorAll('[data-testid=stAlert]').forEach(alert => window.alertsSeen.add(alert.innerText.trim()));
}).observe(document, {subtree: true, childList: true, characterData: true});"""
STARTING = "Starting the CNN classroom: loading PyTorch and the network, a few seconds, once per server."


def menu_seen(page: Page) -> set[str]:
    return set(page.evaluate("[...window.menuSeen]"))


def test_a_cold_first_request_to_draw_shows_the_draw_page_with_the_apps_navigation(page: Page, cold_app_url):
    errors = watch_errors(page)
    page.add_init_script(MENU_SEEN_JS)
    page.goto(cold_app_url + "/draw")
    expect(page.get_by_role("heading", name="Draw a digit", exact=True)).to_be_visible(timeout=120_000)
    expect(page.get_by_text("Draw a digit in the black square")).to_be_visible(timeout=60_000)
    # Rerouted before the page's own imports: app.py said that the server was starting (a white page before).
    assert STARTING in page.evaluate("[...window.alertsSeen]")
    expect(page.get_by_text(STARTING)).to_have_count(0)
    # The menu is app.py's: its titles, in its order (an old-style menu lists the files: app, home, ...). On a
    # server bound to loopback with no token the one user is the teacher, so the Teacher page is listed last.
    labels = page.get_by_test_id("stSidebarNav").get_by_test_id("stSidebarNavLink").get_by_test_id("stMarkdownContainer")
    expect(labels).to_have_text([*PAGES, "Teacher"], timeout=60_000)
    assert menu_seen(page) == {*PAGES, "Teacher"}  # never "shared", "train form", ... not even at first
    expect(page).to_have_url(cold_app_url + "/draw")
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_a_fresh_servers_first_visitor_reads_that_it_is_starting_then_the_home_page(page: Page, cold_app_url):
    """The first run imports PyTorch and the engine (~5 s here): the walk saw a white page for 6-7 s."""
    errors = watch_errors(page)
    page.add_init_script(MENU_SEEN_JS)
    page.goto(cold_app_url)
    expect(page.get_by_role("heading", name="The CNN classroom")).to_be_visible(timeout=120_000)
    assert STARTING in page.evaluate("[...window.alertsSeen]")  # shown while it loaded
    expect(page.get_by_text(STARTING)).to_have_count(0)  # and gone once it has
    assert menu_seen(page) == {*PAGES, "Teacher"}
    expect(page.get_by_test_id("stException")).to_have_count(0)
    assert errors == []


def test_a_server_with_a_short_teacher_token_shows_its_sentence_and_no_menu_of_files(page: Page, tmp_path):
    process, url = start_app(tmp_path, env={"CNN_TEACHER_TOKEN": "1234"})
    try:
        errors = watch_errors(page)
        page.add_init_script(MENU_SEEN_JS)
        page.goto(url)
        expect(page.get_by_test_id("stAlertContentError")).to_have_text(
            "The class server is not set up right: CNN_TEACHER_TOKEN must be at least 12 characters long "
            "(a short one can be guessed).", timeout=120_000)
        # Without the app's navigation Streamlit listed the files of pages/ (shared, train_form, ...) in the sidebar.
        # The menu arrives with the session, before the script's first element: by now it would be drawn.
        expect(page.get_by_test_id("stSidebarNav")).to_have_count(0)
        assert menu_seen(page) == set()  # no menu at any moment: the walk saw the files listed for its first ~4 s
        expect(page.get_by_test_id("stException")).to_have_count(0)
        assert errors == []
    finally:
        stop_app(process)
