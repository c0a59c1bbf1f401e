"""The web side over real HTTPS (the server runs as its own process, as under `run`):
logins, cookies, CSRF, access rules, throttling, LDAP, export, admin pages, audit."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from web_helpers import PASSWORD, WebSite

from archive.users import UserSpec, upsert_user

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def site(web_site) -> WebSite:  # type: ignore[no-untyped-def]
    return web_site()


def test_login_cookie_is_hardened_and_pages_carry_a_strict_csp(site: WebSite) -> None:
    c = site.client()
    page = c.get("/login")
    assert page.status == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    reply = c.login("keiri")
    assert reply.status == 303 and reply.headers["location"] == "/search"
    session = [h for h in reply.cookies if h.startswith("__Host-mailtee_session=")]
    assert session, reply.cookies
    attrs = session[0].lower()
    assert "secure" in attrs and "httponly" in attrs and "samesite=strict" in attrs
    assert c.get("/search?q=hostile").status == 200


def test_wrong_password_is_refused_without_saying_why(site: WebSite) -> None:
    c = site.client()
    reply = c.login("keiri", "not the password")
    assert reply.status == 401
    assert "The user name or password is not correct." in reply.text
    unknown = c.login("nobody-here", "whatever12345")
    assert unknown.status == 401 and "not correct" in unknown.text
    assert c.get("/search").status == 303  # not logged in: sent to the login page


def test_post_without_a_valid_csrf_token_is_refused(site: WebSite) -> None:
    c = site.client()
    c.login("keiri")
    for form in ({}, {"csrf": "forged"}):
        assert c.post("/export", {**form, "q": "", "format": "zip"}).status == 403
        assert c.post("/logout", form).status == 403
    assert c.get("/search").status == 200  # the session survived the forged logout
    stranger = site.client()  # no login cookie: the login form itself is protected
    reply = stranger.post("/login", {"login": "keiri", "password": PASSWORD})
    assert reply.status == 403
    assert c.post("/export", {"csrf": c.csrf(), "q": "", "format": "zip"}).status == 200


def test_a_user_cannot_open_another_users_mail_but_an_auditor_can(site: WebSite) -> None:
    private = site.ids["private"]
    keiri = site.client()
    keiri.login("keiri")
    for suffix in ("", "/eml", "/raw", "/html", "/part/1"):
        assert keiri.get(f"/message/{private}{suffix}").status == 404, suffix
    assert keiri.get("/message/999999").status == 404
    assert "private note" not in keiri.get("/search?q=private").text
    bob = site.client()
    bob.login("bob")
    assert bob.get(f"/message/{private}").status == 200
    audra = site.client()
    audra.login("audra")
    page = audra.get(f"/message/{private}")
    assert page.status == 200 and "Only bob@example.jp may read this." in page.text
    assert 'id="provenance"' in page.text  # auditors see where the copy came from
    eml = audra.get(f"/message/{private}/eml")
    with site.archive() as a:
        assert hashlib.sha256(eml.body).hexdigest() == a.get_message(private)["sha256"]
    audit = site.audit()
    denied = [r for r in audit if r["action"] == "web.denied" and r["actor"] == "web:keiri"]
    assert any(r["path"] == f"/message/{private}" for r in denied)
    assert all(r["client"] == "127.0.0.1" for r in denied)
    views = [r for r in audit if r["actor"] == "web:audra" and r.get("message") == private]
    assert {r["action"] for r in views} >= {"web.view", "web.download"}
    assert any(r["action"] == "web.login" and r["actor"] == "web:audra" for r in audit)


def test_logins_searches_views_and_failures_are_audited(site: WebSite) -> None:
    c = site.client()
    c.login("keiri", "wrong password!")
    c.login("keiri")
    c.get("/search?q=hostile")
    hostile = site.ids["hostile"]
    c.get(f"/message/{hostile}")
    c.get(f"/message/{hostile}/part/3")
    audit = site.audit()
    actions = [(r["actor"], r["action"]) for r in audit]
    assert ("web:-", "web.login-failed") in actions
    failed = [r for r in audit if r["action"] == "web.login-failed"]
    assert failed[-1]["login"] == "keiri" and failed[-1]["client"] == "127.0.0.1"
    for action in ("web.login", "web.search", "web.view", "web.download"):
        assert ("web:keiri", action) in actions, action
    search = [r for r in audit if r["action"] == "web.search"][-1]
    assert search["query"] == "hostile" and search["hits"] == 1
    assert PASSWORD not in str(audit) and "wrong password!" not in str(audit)


def test_logout_ends_the_session(site: WebSite) -> None:
    c = site.client()
    c.login("keiri")
    token = c.jar["__Host-mailtee_session"]
    assert c.post("/logout", {"csrf": c.csrf()}).status == 303
    c.jar["__Host-mailtee_session"] = token  # replaying the old cookie does not work
    assert c.get("/search").status == 303


def test_export_streams_a_zip_of_the_exact_messages_and_an_mbox(site: WebSite) -> None:
    c = site.client()
    c.login("audra")
    token = c.csrf()
    reply = c.post("/export", {"csrf": token, "q": "", "format": "zip"})
    assert reply.status == 200
    assert reply.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(reply.body)) as zf, site.archive() as a:
        names = sorted(zf.namelist())
        assert len(names) == 2
        for name in names:
            mid = int(name.split("-")[0])
            assert zf.read(name) == a.get_raw(mid)
    picked = c.post("/export", {"csrf": token, "id": [site.ids["private"]], "format": "mbox"})
    assert picked.status == 200 and picked.body.startswith(b"From MAILER-DAEMON ")
    assert picked.body.count(b"\nFrom ") == 0 and b"Only bob@example.jp" in picked.body
    keiri = site.client()
    keiri.login("keiri")
    mine = keiri.post("/export", {"csrf": keiri.csrf(), "id": [site.ids["private"]]})
    with zipfile.ZipFile(io.BytesIO(mine.body)) as zf:
        assert zf.namelist() == []  # selecting someone else's message exports nothing


def test_admin_pages_are_for_admins(site: WebSite) -> None:
    root = site.client()
    root.login("root")
    users = root.get("/admin/users")
    assert users.status == 200 and "audra" in users.text and "auditor" in users.text
    audit = root.get("/admin/audit?actor=web:keiri")
    assert audit.status == 200 and "web.login" in audit.text
    status = root.get("/admin/status")
    assert status.status == 200  # no service runs here: the page says so
    assert "control socket" in status.text or "Listeners" in status.text
    keiri = site.client()
    keiri.login("keiri")
    assert keiri.get("/admin/users").status == 403
    assert keiri.get("/admin/audit").status == 403


def test_japanese_ui_by_accept_language_and_switch(site: WebSite) -> None:
    c = site.client()
    assert "ログイン" in c.get("/login", accept_language="ja,en;q=0.5").text
    assert "Log in" in c.get("/login", accept_language="en-US").text
    switched = c.get("/login?lang=ja", accept_language="en-US")
    assert "ログイン" in switched.text
    assert "ログイン" in c.get("/login", accept_language="en-US").text  # remembered


def test_repeated_failures_are_throttled_per_account_and_per_address(web_site) -> None:  # type: ignore[no-untyped-def]
    site = web_site(web={"max_failures": 3, "throttle_window": 600})
    c = site.client()
    for _ in range(3):
        assert c.login("keiri", "wrong password").status == 401
    throttled = c.login("keiri")  # even the right password: the account is locked out
    assert throttled.status == 429
    assert "Too many failed logins. Try again in 10 minute(s)." in throttled.text
    ja = c.get("/login", accept_language="ja")
    assert ja.status == 200
    # the same address trying other accounts is throttled too
    other = site.client()
    assert other.login("bob").status == 429
    assert any(r["action"] == "web.login-throttled" for r in site.audit())
    log = site.log()
    assert PASSWORD not in log and "wrong password" not in log


def test_directory_user_logs_in_with_an_ldap_bind_over_starttls(web_site, slapd_tls, ca_file):  # type: ignore[no-untyped-def]
    slapd_tls.add(
        f"""dn: uid=dana,ou=people,{slapd_tls.base_dn}
objectClass: inetOrgPerson
uid: dana
cn: Dana Directory
sn: Directory
mail: dana@example.jp
userPassword: dana-ldap-secret
"""
    )
    ldap = {
        "url": slapd_tls.url,
        "base_dn": slapd_tls.base_dn,
        "bind_dn": slapd_tls.bind_dn,
        "start_tls": True,
        "ca_file": str(ca_file),
    }
    site = web_site(extra={"ldap": ldap})
    secrets = site.config_path.with_name("secrets.toml")
    secrets.write_text(f'[ldap]\nbind_password = "{slapd_tls.password}"\n')
    secrets.chmod(0o600)
    from web_helpers import start_server, stop_server

    stop_server(site.proc)  # restart so it reads the secrets
    site.proc = start_server(site.config_path, site.log_path, site.port)
    with site.archive() as a:
        upsert_user(a.catalog, UserSpec("dana", ["dana@example.jp"]), "ldap")
    c = site.client()
    assert c.login("dana", "not-danas-password").status == 401
    ok = c.login("dana@example.jp", "dana-ldap-secret")
    assert ok.status == 303, ok.text
    page = c.get("/search?q=x")
    assert "dana (user)" in page.text
    logins = [r for r in site.audit() if r["action"] == "web.login"]
    assert logins[-1]["via"] == "ldap" and logins[-1]["actor"] == "web:dana"
    log = site.log()
    assert "dana-ldap-secret" not in log and slapd_tls.password not in log
    assert c.jar["__Host-mailtee_session"] not in log


def test_a_changed_role_or_a_removed_user_ends_the_session(site: WebSite) -> None:
    from archive.logins import set_password, set_role
    from archive.users import UserSpec, add_user, remove_user

    with site.archive() as a:
        add_user(a.catalog, UserSpec("temp", ["temp@example.jp"]))
        set_password(a.catalog, "temp", PASSWORD)
        set_role(a.catalog, "temp", "auditor")
    c = site.client()
    c.login("temp")
    assert c.get(f"/message/{site.ids['private']}").status == 200
    with site.archive() as a:
        set_role(a.catalog, "temp", "user")  # no longer an auditor: the session is over
    assert c.get(f"/message/{site.ids['private']}").status == 303
    c.login("temp")
    assert c.get(f"/message/{site.ids['private']}").status == 404
    with site.archive() as a:
        remove_user(a.catalog, "temp")
    assert c.get("/search").status == 303


def test_admin_status_shows_the_mailboxes_last_pulls(web_site) -> None:  # type: ignore[no-untyped-def]
    from archive.pull.state import PullState

    boxes = [
        {"name": "ok-box", "protocol": "imap", "server": "imap.example.com", "user": "a"},
        {"name": "bad-box", "protocol": "pop3", "server": "pop.example.com", "user": "b"},
        {"name": "new-box", "protocol": "pop3", "server": "pop.example.com", "user": "c"},
    ]
    site = web_site(extra={"mailbox": boxes})
    state = PullState(site.state_dir)
    try:
        state.record_run("ok-box", True, None)
        state.record_run("bad-box", False, "pop.example.com:995: timed out")
    finally:
        state.close()
    root = site.client()
    root.login("root")
    en = root.get("/admin/status", accept_language="en").text
    assert "Mailboxes (pull archiving)" in en  # shown although no service answers here
    assert "ok-box" in en and "failed 1 time(s) in a row: pop.example.com:995: timed out" in en
    assert "new-box" in en and "never" in en
    ja = root.get("/admin/status", accept_language="ja").text
    assert "1 回連続で失敗" in ja and "未実行" in ja
