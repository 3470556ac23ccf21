"""Flows of the legacy Python SDK (PyPI e2b 2.22.0): POST /sandboxes, POST
/sandboxes/{id}/connect (with spurious E2b-Sandbox-* headers), beta_create, and the
routing trap of 2.7.0–2.25.0: envd requests of a sandbox from connect() carry no
E2b-Sandbox-Id, only X-Access-Token, so the server must route them by token."""

import pytest
from e2b import (
    CommandExitException,
    Sandbox,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from conftest import RUN_ID, list_ids, meta, wait_paused

PAUSED = SandboxState.PAUSED


def _routing_headers(sbx):
    return {k.lower() for k in sbx.connection_config.sandbox_headers}


def test_version():
    import e2b.api.metadata as m

    assert m.package_version == "2.22.0", m.package_version
    assert hasattr(Sandbox, "beta_create")


def test_legacy_connect_routes_by_token(track):
    """Two paused sandboxes with different contents; after connect() (no E2b-Sandbox-Id),
    each sandbox's requests must reach that sandbox. With two live sandboxes the server
    cannot fall back to 'the only sandbox'."""
    a = track(Sandbox.create(metadata=meta("legacy-token")))
    b = track(Sandbox.create(metadata=meta("legacy-token")))
    assert "e2b-sandbox-id" in _routing_headers(a), "create() sends the routing header"
    a.commands.run('echo "Hello World" > /tmp/file.txt')
    b.commands.run('echo "Hello B" > /tmp/file.txt')
    a.beta_pause()  # returns None in 2.22.0
    b.beta_pause()
    paused = list_ids(Sandbox, SandboxQuery, PAUSED, "legacy-token")
    assert sorted(paused) == sorted([a.sandbox_id, b.sandbox_id])

    ra = Sandbox.connect(a.sandbox_id)
    rb = Sandbox.connect(b.sandbox_id)
    # The precondition of this test: 2.22.0 really omits the routing header after connect.
    assert "e2b-sandbox-id" not in _routing_headers(ra), ra.connection_config.sandbox_headers
    assert "x-access-token" in _routing_headers(ra)

    assert ra.commands.run("cat /tmp/file.txt").stdout == "Hello World\n"
    assert rb.commands.run("cat /tmp/file.txt").stdout == "Hello B\n"
    # envd plain HTTP (/files) and the filesystem RPCs route the same way.
    assert ra.files.read("/tmp/file.txt") == "Hello World\n"
    rb.files.write("/home/user/only-b.txt", "b")
    assert ra.files.exists("/home/user/only-b.txt") is False
    assert rb.files.exists("/home/user/only-b.txt") is True
    assert ra.is_running() is True
    with pytest.raises(CommandExitException) as e:
        ra.commands.run("exit 5")
    assert e.value.exit_code == 5

    assert ra.kill() is True
    assert rb.commands.run("hostname").exit_code == 0, "b is unaffected by a's kill"
    assert rb.kill() is True


def test_legacy_beta_create_auto_pause(track):
    s = track(Sandbox.beta_create(auto_pause=True, timeout=4, metadata=meta("legacy-autopause")))
    s.commands.run('echo "Hello World" > /home/user/hello.txt')
    wait_paused(Sandbox, SandboxQuery, PAUSED, "legacy-autopause", s.sandbox_id)

    r = Sandbox.connect(s.sandbox_id, timeout=4)
    assert r.commands.run("cat /home/user/hello.txt").stdout == "Hello World\n"
    wait_paused(Sandbox, SandboxQuery, PAUSED, "legacy-autopause", s.sandbox_id)
    assert Sandbox.get_info(s.sandbox_id).state == PAUSED


def test_legacy_list_and_kill(track):
    ids = []
    for _ in range(3):
        s = track(Sandbox.create(metadata=meta("legacy-list")))
        s.beta_pause()
        ids.append(s.sandbox_id)
    p = Sandbox.list(
        query=SandboxQuery(state=[PAUSED], metadata={"suite": RUN_ID, "flow": "legacy-list"}),
        limit=2,
    )
    page1 = p.next_items()
    assert len(page1) == 2 and p.has_next is True
    page2 = p.next_items()
    assert len(page2) == 1 and p.has_next is False
    assert sorted(x.sandbox_id for x in page1 + page2) == sorted(ids)

    for sid in ids:
        assert Sandbox.kill(sid) is True
    assert Sandbox.kill(ids[0]) is False
    assert list_ids(Sandbox, SandboxQuery, PAUSED, "legacy-list") == []
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(ids[0])
