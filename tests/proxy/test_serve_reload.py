"""Reload without dropping sessions (issue 6): SIGHUP and `ProxyService.reload`.

Acceptance: SIGHUP adds a listener while an SMTP session is in the middle of DATA; that
session completes. Also: removed and moved listeners stop accepting while their sessions
in flight finish, a changed target applies to new connections only, unchanged listeners
keep their socket, and a bad configuration changes nothing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from admin.config import Config, ListenerConfig, Secrets, save_config
from fixtures import mails
from fixtures.smtp_clients import smtp_wire, smtplib_session
from proxy.errors import ProxyError
from proxy.service import run_service

MAIL = mails.plain()


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A state dir with a short path: UNIX socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def smtp_listener(name: str, up_port: int, **fields) -> ListenerConfig:
    return ListenerConfig(
        name=name,
        protocol="smtp",
        listen="127.0.0.1",
        port=0,
        target_host="127.0.0.1",
        target_port=up_port,
        **fields,
    )


def write_config(state: Path, listeners: list[ListenerConfig], **fields) -> tuple[Config, Path]:
    config = Config(hostname="mailtee.test", state_dir=str(state), listener=listeners, **fields)
    path = state / "config.toml"
    save_config(config, path)
    return config, path


async def start_data(port: int) -> object:
    """Open an SMTP session and stop in the middle of DATA (half the message sent)."""
    cm = smtp_wire(port)
    w = await cm.__aenter__()
    assert (await w.read_reply())[0] == 220
    assert (await w.command(b"EHLO client.test"))[0] == 250
    assert (await w.command(b"MAIL FROM:<alice@example.org>"))[0] == 250
    assert (await w.command(b"RCPT TO:<bob@example.net>"))[0] == 250
    assert (await w.command(b"DATA"))[0] == 354
    await w.send(MAIL.data[: len(MAIL.data) // 2])
    return cm, w


async def finish_data(cm, w) -> tuple[int, bytes]:
    await w.send(MAIL.data[len(MAIL.data) // 2 :] + b".\r\n")
    reply = await w.read_reply()
    assert (await w.command(b"QUIT"))[0] == 221
    await cm.__aexit__(None, None, None)
    return reply


def refuses(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


async def test_sighup_adds_a_listener_while_data_is_in_flight(smtp_upstream, nursery, short_dir):
    up = smtp_upstream()
    config, path = write_config(short_dir, [smtp_listener("smtp", up.port)])
    service = await nursery.start(run_service, config, Secrets(), path)
    cm, w = await start_data(service.ports["smtp"])

    write_config(short_dir, [smtp_listener("smtp", up.port), smtp_listener("extra", up.port)])
    os.kill(os.getpid(), signal.SIGHUP)
    with trio.fail_after(5):
        while "extra" not in service.ports:  # noqa: ASYNC110 - set by the reload
            await trio.sleep(0.01)

    code, text = await finish_data(cm, w)
    assert code == 250, text
    assert [t.content for t in up.messages] == [MAIL.data]
    assert service.last_reload["added"] == ["extra"]
    assert service.last_reload["unchanged"] == ["smtp"]
    res = await smtplib_session(service.ports["extra"], [mails.plain(2)])
    assert res.transactions[0].delivered, res
    assert len(up.messages) == 2
    nursery.cancel_scope.cancel()


async def test_sighup_with_a_broken_config_keeps_serving(smtp_upstream, nursery, short_dir):
    up = smtp_upstream()
    config, path = write_config(short_dir, [smtp_listener("smtp", up.port)])
    service = await nursery.start(run_service, config, Secrets(), path)
    port = service.ports["smtp"]
    path.write_text("this is = not [valid toml\n")
    os.kill(os.getpid(), signal.SIGHUP)
    await trio.sleep(0.3)
    assert service.reloads == 0
    res = await smtplib_session(port, [MAIL])
    assert res.transactions[0].delivered, res
    nursery.cancel_scope.cancel()


async def test_removed_listener_stops_accepting_and_its_session_completes(
    smtp_upstream, make_proxy
):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "keep", "target_port": up.port},
                              {"name": "gone", "target_port": up.port}])  # fmt: skip
    service = proxy.service
    gone_port, keep_port = service.ports["gone"], service.ports["keep"]
    cm, w = await start_data(gone_port)
    keep_socket = service._bound["keep"].sockets
    new = proxy.config.model_copy(update={"listener": [proxy.config.listener[0]]})
    result = await service.reload(new, Secrets())
    assert result["removed"] == ["gone"] and result["unchanged"] == ["keep"]
    assert "gone" not in service.ports
    assert service.active["gone"] == 1  # still draining
    assert service.snapshot()["draining"] == {"gone": 1}
    assert refuses(gone_port)
    assert service._bound["keep"].sockets is keep_socket  # untouched
    assert service.ports["keep"] == keep_port

    code, text = await finish_data(cm, w)
    assert code == 250, text
    assert [t.content for t in up.messages] == [MAIL.data]
    with trio.fail_after(5):
        while "gone" in service.active:  # noqa: ASYNC110
            await trio.sleep(0.01)
    res = await smtplib_session(keep_port, [mails.plain(2)])
    assert res.transactions[0].delivered


async def test_changed_target_applies_to_new_connections_only(smtp_upstream, make_proxy):
    old_up, new_up = smtp_upstream(), smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": old_up.port}])
    service = proxy.service
    port = service.ports["smtp"]
    cm, w = await start_data(port)
    lc = proxy.config.listener[0].model_copy(update={"target_port": new_up.port})
    result = await service.reload(proxy.config.model_copy(update={"listener": [lc]}), Secrets())
    assert result["changed"] == ["smtp"] and result["errors"] == []
    assert service.ports["smtp"] == port  # same socket, no gap in accepting
    assert (await finish_data(cm, w))[0] == 250
    res = await smtplib_session(port, [mails.plain(2)])
    assert res.transactions[0].delivered
    assert [t.content for t in old_up.messages] == [MAIL.data]
    assert [t.content for t in new_up.messages] == [mails.plain(2).data]


async def test_moved_listener_is_rebound(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    service = proxy.service
    old_port = service.ports["smtp"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    lc = proxy.config.listener[0].model_copy(update={"port": free})
    result = await service.reload(proxy.config.model_copy(update={"listener": [lc]}), Secrets())
    assert result["changed"] == ["smtp"]
    assert service.ports["smtp"] == free
    assert refuses(old_port)
    res = await smtplib_session(free, [MAIL])
    assert res.transactions[0].delivered


async def test_invalid_reload_changes_nothing(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    service = proxy.service
    port = service.ports["smtp"]
    bad = proxy.config.listener[0].model_copy(update={"target_user": "u", "port": 0})
    extra = bad.model_copy(update={"name": "extra"})
    with pytest.raises(ProxyError, match="target_password"):
        await service.reload(proxy.config.model_copy(update={"listener": [bad, extra]}), Secrets())
    assert service.ports == {"smtp": port}
    assert service.reloads == 0
    res = await smtplib_session(port, [MAIL])
    assert res.transactions[0].delivered


async def test_bind_failure_reports_the_listener_and_keeps_the_rest(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    service = proxy.service
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        extra = proxy.config.listener[0].model_copy(update={"name": "extra", "port": taken})
        new = proxy.config.model_copy(update={"listener": [proxy.config.listener[0], extra]})
        result = await service.reload(new, Secrets())
    assert result["added"] == ["extra"]
    assert len(result["errors"]) == 1 and f"127.0.0.1:{taken}" in result["errors"][0]
    assert "extra" not in service.ports
    res = await smtplib_session(service.ports["smtp"], [MAIL])
    assert res.transactions[0].delivered


async def test_reload_can_remove_every_listener_and_add_one_back(smtp_upstream, make_proxy):
    up = smtp_upstream()
    proxy = await make_proxy([{"name": "smtp", "target_port": up.port}])
    service = proxy.service
    await service.reload(proxy.config.model_copy(update={"listener": []}), Secrets())
    assert service.ports == {}
    await trio.sleep(0.05)  # the service keeps running with nothing to accept
    await service.reload(proxy.config, Secrets())
    res = await smtplib_session(service.ports["smtp"], [MAIL])
    assert res.transactions[0].delivered
