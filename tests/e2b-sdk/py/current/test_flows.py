"""Flows of the current Python SDK (PyPI e2b 2.63.x, sync API): POST /v2/sandboxes,
/v2/…/connect, envd through E2B_SANDBOX_URL with the E2b-Sandbox-* routing headers."""

import re
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone

import pytest
from e2b import (
    AuthenticationException,
    CommandExitException,
    FileNotFoundException,
    FilesystemEventType,
    FileType,
    InvalidArgumentException,
    NotFoundException,
    PtySize,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
    SandboxState,
)

from conftest import RUN_ID, Reader, list_ids, meta, poll, wait_paused

PAUSED, RUNNING = SandboxState.PAUSED, SandboxState.RUNNING


def ids_of(flow, state):
    return list_ids(Sandbox, SandboxQuery, state, flow)


def test_version():
    import e2b.api.metadata as m

    assert m.package_version.startswith("2.63."), m.package_version


def test_pause_connect_cat_kill(track):
    """The classic example: create → run → beta_pause → connect → cat → kill."""
    sandbox = track(Sandbox.create(metadata=meta("pause-connect")))
    sandbox.commands.run('echo "Hello World" > /tmp/file.txt')
    assert sandbox.beta_pause() is True
    sandbox_id = sandbox.sandbox_id
    assert re.fullmatch(r"[a-z0-9]+", sandbox_id)

    resumed = Sandbox.connect(sandbox_id)
    assert resumed.sandbox_id == sandbox_id
    result = resumed.commands.run("cat /tmp/file.txt")
    assert result.stdout == "Hello World\n"
    assert result.exit_code == 0
    assert resumed.kill() is True
    assert resumed.is_running() is False


def test_memory_survives_pause(track):
    sandbox = track(Sandbox.create(metadata=meta("memory")))
    h = sandbox.commands.run(
        "n=0; while true; do n=$((n+1)); echo $n > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.1; done",
        background=True,
        timeout=0,
    )
    poll("counter to reach 5", lambda: int(sandbox.commands.run("cat /tmp/n").stdout or 0) >= 5)
    h.disconnect()
    assert sandbox.pause() is True
    resumed = Sandbox.connect(sandbox.sandbox_id)
    first = int(resumed.commands.run("cat /tmp/n").stdout)
    poll("counter to go on", lambda: int(resumed.commands.run("cat /tmp/n").stdout) > first)
    assert any(p.pid == h.pid for p in resumed.commands.list())


def test_list_paused_with_pagination(track):
    ids = []
    for _ in range(3):
        s = track(Sandbox.create(metadata=meta("list")))
        assert s.beta_pause() is True
        ids.append(s.sandbox_id)
    running = track(Sandbox.create(metadata=meta("list")))

    # The classic example, one page.
    p = Sandbox.list(query=SandboxQuery(state=[PAUSED], metadata={"suite": RUN_ID, "flow": "list"}))
    items = p.next_items()
    assert p.has_next is False
    assert sorted(s.sandbox_id for s in items) == sorted(ids)
    for s in items:
        assert s.state == PAUSED
        assert s.template_id == "base"
        assert s.metadata == meta("list")
        assert isinstance(s.started_at, datetime) and s.started_at.tzinfo is not None
        assert s.cpu_count > 0 and s.memory_mb > 0

    p = Sandbox.list(
        query=SandboxQuery(state=[PAUSED], metadata={"suite": RUN_ID, "flow": "list"}), limit=2
    )
    assert p.has_next is True
    page1 = p.next_items()
    assert len(page1) == 2
    assert p.has_next is True and p.next_token
    page2 = p.next_items()
    assert len(page2) == 1
    assert p.has_next is False
    assert sorted(s.sandbox_id for s in page1 + page2) == sorted(ids)

    assert ids_of("list", RUNNING) == [running.sandbox_id]
    both = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN_ID, "flow": "list"})).next_items()
    assert len(both) == 4


def test_list_metadata_filters(track):
    odd = {"user id": "a&b=c/é", "x+y": "1 2"}
    red = track(Sandbox.create(metadata=meta("metadata", color="red", **odd)))
    blue = track(Sandbox.create(metadata=meta("metadata", color="blue")))

    def ids(**md):
        p = Sandbox.list(query=SandboxQuery(metadata={"suite": RUN_ID, **md}))
        return sorted(s.sandbox_id for s in p.next_items())

    assert ids(flow="metadata") == sorted([red.sandbox_id, blue.sandbox_id])
    assert ids(color="red") == [red.sandbox_id]
    assert ids(color="blue", flow="metadata") == [blue.sandbox_id]
    assert ids(color="green") == []
    assert ids(**{"user id": "a&b=c/é"}) == [red.sandbox_id]
    assert ids(**{"x+y": "1 2"}) == [red.sandbox_id]
    assert red.get_info().metadata == meta("metadata", color="red", **odd)


def test_kill_by_id(track):
    s = track(Sandbox.create(metadata=meta("kill")))
    assert Sandbox.kill(s.sandbox_id) is True
    assert Sandbox.kill(s.sandbox_id) is False
    assert Sandbox.kill("inosuchsandbox0000000") is False
    assert ids_of("kill", RUNNING) == []

    p = track(Sandbox.create(metadata=meta("kill")))
    assert p.pause() is True
    assert Sandbox.kill(p.sandbox_id) is True
    assert ids_of("kill", PAUSED) == []
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect(p.sandbox_id)


def test_auto_pause_lifecycle(track):
    s = track(
        Sandbox.create(timeout=4, lifecycle={"on_timeout": "pause"}, metadata=meta("autopause"))
    )
    s.files.write("/home/user/state.txt", "kept")
    wait_paused(Sandbox, SandboxQuery, PAUSED, "autopause", s.sandbox_id)
    info = Sandbox.get_info(s.sandbox_id)
    assert info.state == PAUSED
    assert info.lifecycle is not None and info.lifecycle["on_timeout"] == "pause", info.lifecycle

    r = Sandbox.connect(s.sandbox_id, timeout=4)
    assert r.files.read("/home/user/state.txt") == "kept"
    assert Sandbox.get_info(s.sandbox_id).state == RUNNING
    wait_paused(Sandbox, SandboxQuery, PAUSED, "autopause", s.sandbox_id)

    r2 = Sandbox.connect(s.sandbox_id, timeout=60)
    assert r2.commands.run("cat /home/user/state.txt").stdout == "kept"


def test_timeout_kills_without_auto_pause(track):
    s = track(Sandbox.create(timeout=60, metadata=meta("timeout-kill")))
    s.set_timeout(3)
    poll(
        "the sandbox to be killed at its timeout",
        lambda: not ids_of("timeout-kill", RUNNING) and not ids_of("timeout-kill", PAUSED),
        interval=0.5,
    )
    assert s.is_running() is False
    with pytest.raises(NotFoundException):
        Sandbox.get_info(s.sandbox_id)


def test_background_list_kill(track):
    s = track(Sandbox.create(metadata=meta("commands")))
    h = s.commands.run("sleep 600", background=True, timeout=0)
    assert h.pid > 0
    p = next((x for x in s.commands.list() if x.pid == h.pid), None)
    assert p is not None
    assert p.cmd == "/bin/bash"
    assert p.args == ["-l", "-c", "sleep 600"]

    assert s.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException) as e:
        h.wait()
    assert e.value.exit_code != 0
    assert s.commands.kill(h.pid) is False
    assert all(x.pid != h.pid for x in s.commands.list())

    out = []
    h2 = s.commands.run(
        "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo err >&2", background=True
    )
    res = h2.wait(on_stdout=out.append)  # the sync SDK takes the callbacks in wait()
    assert res.exit_code == 0
    assert res.stdout == "line1\nline2\nline3\n"
    assert res.stderr == "err\n"
    assert "".join(out) == "line1\nline2\nline3\n"

    r = s.commands.run('echo "$FOO $(pwd) $(whoami)"', envs={"FOO": "bar"}, cwd="/tmp")
    assert r.stdout == "bar /tmp user\n"
    assert s.commands.run("whoami", user="root").stdout == "root\n"


def test_stdin(track):
    s = track(Sandbox.create(metadata=meta("stdin")))
    h = s.commands.run("cat", background=True, stdin=True)
    s.commands.send_stdin(h.pid, "hello\n")
    h.send_stdin(b"world\n")
    s.commands.close_stdin(h.pid)
    res = h.wait()
    assert res.exit_code == 0
    assert res.stdout == "hello\nworld\n"


def test_commands_connect_after_resume(track):
    s = track(Sandbox.create(metadata=meta("commands-connect")))
    # The counter file is replaced by a rename, so a reader never sees it empty mid-write.
    h = s.commands.run(
        "i=0; while true; do i=$((i+1)); echo tick $i; echo $i > /tmp/i.new; mv /tmp/i.new /tmp/i; sleep 0.2; done",
        background=True,
        timeout=0,
    )
    poll("first ticks", lambda: int(s.commands.run("cat /tmp/i || echo 0").stdout) >= 3)
    h.disconnect()
    assert s.beta_pause() is True

    r = Sandbox.connect(s.sandbox_id)
    assert any(p.pid == h.pid for p in r.commands.list())
    c = r.commands.connect(h.pid, timeout=0)
    reader = Reader(c)
    poll("ticks after resume", lambda: len(re.findall(r"tick \d+", reader.stdout)) >= 3)
    nums = [int(n) for n in re.findall(r"tick (\d+)", reader.stdout)]
    assert nums[0] > 3, nums[:5]
    assert r.commands.kill(h.pid) is True
    assert reader.done.wait(30), "the connected stream ends after kill"
    with pytest.raises(NotFoundException):
        r.commands.connect(999999)


def test_pty(track):
    s = track(Sandbox.create(metadata=meta("pty")))
    pty = s.pty.create(PtySize(rows=24, cols=80), timeout=0)
    reader = Reader(pty)
    out = lambda: reader.pty.decode(errors="replace")  # noqa: E731
    s.pty.send_stdin(pty.pid, b"echo pty-$((6*7)); tty\n")
    poll("pty output", lambda: "pty-42" in out())
    poll("a tty", lambda: re.search(r"/dev/pts/\d+", out()))
    s.pty.send_stdin(pty.pid, b"stty size\n")
    poll("initial size", lambda: "24 80" in out())
    s.pty.resize(pty.pid, PtySize(rows=40, cols=120))
    s.pty.send_stdin(pty.pid, b"stty size\n")
    poll("size after resize", lambda: "40 120" in out(), timeout=20)
    assert s.pty.kill(pty.pid) is True
    assert reader.done.wait(30), "the pty stream ends after kill"
    assert all(p.pid != pty.pid for p in s.commands.list())


def test_files(track):
    s = track(Sandbox.create(metadata=meta("files")))
    info = s.files.write("/home/user/dir/a.txt", "hello files")
    assert info.path == "/home/user/dir/a.txt"
    assert s.files.read("/home/user/dir/a.txt") == "hello files"
    assert bytes(s.files.read("/home/user/dir/a.txt", format="bytes")) == b"hello files"
    assert s.files.read("dir/a.txt") == "hello files"
    assert s.commands.run("stat -c %U /home/user/dir/a.txt").stdout == "user\n"

    data = bytes(range(256))
    s.files.write("/tmp/bin.dat", data)
    assert bytes(s.files.read("/tmp/bin.dat", format="bytes")) == data

    multi = s.files.write_files(
        [{"path": "/tmp/m/one.txt", "data": "1"}, {"path": "/tmp/m/two.txt", "data": "2"}]
    )
    assert len(multi) == 2
    assert s.files.read("/tmp/m/two.txt") == "2"

    entries = s.files.list("/home/user/dir")
    a = next((e for e in entries if e.name == "a.txt"), None)
    assert a is not None, entries
    assert a.type == FileType.FILE
    assert a.path == "/home/user/dir/a.txt"
    assert a.size == 11

    assert s.files.exists("/home/user/dir/a.txt") is True
    assert s.files.exists("/home/user/dir/none.txt") is False
    assert s.files.get_info("/home/user/dir").type == FileType.DIR

    assert s.files.make_dir("/home/user/dir/sub/deep") is True
    assert s.files.make_dir("/home/user/dir/sub/deep") is False

    moved = s.files.rename("/home/user/dir/a.txt", "/home/user/dir/sub/b.txt")
    assert moved.path == "/home/user/dir/sub/b.txt"
    assert s.files.exists("/home/user/dir/a.txt") is False
    assert s.files.read("/home/user/dir/sub/b.txt") == "hello files"

    s.files.remove("/home/user/dir/sub")
    assert s.files.exists("/home/user/dir/sub") is False
    with pytest.raises(FileNotFoundException):
        s.files.read("/home/user/dir/sub/b.txt")


def test_watch_dir(track):
    """The sync SDK watches through CreateWatcher / GetWatcherEvents / RemoveWatcher."""
    s = track(Sandbox.create(metadata=meta("watch")))
    s.files.make_dir("/home/user/w")
    w = s.files.watch_dir("/home/user/w")
    events = []

    def seen(name, typ):
        events.extend(w.get_new_events())
        return any(e.name == name and e.type == typ for e in events)

    try:
        s.files.write("/home/user/w/x.txt", "one")
        poll("create event", lambda: seen("x.txt", FilesystemEventType.CREATE))
        s.commands.run("echo more >> /home/user/w/x.txt")
        poll("write event", lambda: seen("x.txt", FilesystemEventType.WRITE))
        s.files.remove("/home/user/w/x.txt")
        poll("remove event", lambda: seen("x.txt", FilesystemEventType.REMOVE))
    finally:
        w.stop()


def _http(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_signed_urls(track):
    s = track(Sandbox.create(metadata=meta("signed-urls")))
    up = s.upload_url("/home/user/up.txt")
    assert "signature=v1_" in up
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"up.txt\"\r\n"
        f"Content-Type: application/octet-stream\r\n\r\nuploaded via url\r\n--{boundary}--\r\n"
    ).encode()
    status, resp = _http(up, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200, (status, resp)
    assert s.files.read("/home/user/up.txt") == "uploaded via url"

    down = s.download_url("/home/user/up.txt", use_signature_expiration=120)
    assert re.search(r"signature_expiration=\d+", down)
    status, got = _http(down)
    assert (status, got) == (200, b"uploaded via url")

    # A signature for another path, a tampered expiry or an expired signature must not be
    # accepted. Without routing headers the server routes by signature; a URL whose
    # signature matches no sandbox is unroutable, and 502 "not found" (e2b-compat.md §1.5)
    # is then a rejection too. With the routing headers, envd itself must refuse it.
    routed = {"E2b-Sandbox-Id": s.sandbox_id, "E2b-Sandbox-Port": "49983"}

    def rejected(what, url, headers=None):
        status, body = _http(url, headers=headers)
        ok = status in (401, 403) or (
            headers is None and status == 502 and b"was not found" in body
        )
        assert ok, f"{what}{' (routed)' if headers else ''}: {status} {body!r}"

    s.files.write("/home/user/other.txt", "secret")
    forged = down.replace("up.txt", "other.txt")
    rejected("URL signed for another path", forged)
    rejected("URL signed for another path", forged, routed)
    exp = int(re.search(r"signature_expiration=(\d+)", down).group(1))
    tampered = down.replace(f"signature_expiration={exp}", f"signature_expiration={exp + 1000}")
    rejected("tampered expiry", tampered)
    rejected("tampered expiry", tampered, routed)
    short = s.download_url("/home/user/up.txt", use_signature_expiration=1)
    time.sleep(2.5)
    rejected("expired signature", short)
    rejected("expired signature", short, routed)


def test_info_timeout_running_metrics(track):
    s = track(Sandbox.create(timeout=120, metadata=meta("info")))
    info = s.get_info()
    assert info.sandbox_id == s.sandbox_id
    assert info.template_id == "base"
    assert info.state == RUNNING
    assert info.metadata == meta("info")
    assert re.fullmatch(r"\d+\.\d+\.\d+", info.envd_version)
    ttl = (info.end_at - info.started_at).total_seconds()
    assert 100 < ttl < 140, ttl

    s.set_timeout(600)
    left = (s.get_info().end_at - datetime.now(timezone.utc)).total_seconds()
    assert 540 < left < 660, left

    assert s.is_running() is True
    s.commands.run("head -c 20000000 /dev/urandom | sha256sum")
    metrics = poll("metrics", lambda: s.get_metrics(), timeout=30, interval=1)
    m = metrics[-1]
    assert m.mem_total > 0 and m.mem_used > 0, m
    assert m.cpu_count > 0, m
    assert isinstance(m.timestamp, datetime)

    assert s.pause() is True
    assert s.is_running() is False
    assert Sandbox.get_info(s.sandbox_id).state == PAUSED


def test_error_mapping(track):
    with pytest.raises(SandboxNotFoundException):
        Sandbox.connect("inosuchsandbox0000000")
    with pytest.raises(NotFoundException):
        Sandbox.get_info("inosuchsandbox0000000")
    with pytest.raises(NotFoundException):
        Sandbox.pause("inosuchsandbox0000000")
    with pytest.raises(SandboxException):
        track(Sandbox.create("no-such-template-xyz"))
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key="e2b_" + "f" * 40).next_items()

    s = track(Sandbox.create(metadata=meta("errors")))
    with pytest.raises(CommandExitException) as e:
        s.commands.run("echo out; echo oops >&2; exit 3")
    assert e.value.exit_code == 3
    assert e.value.stderr == "oops\n"
    assert e.value.stdout == "out\n"

    with pytest.raises(InvalidArgumentException):
        s.commands.run("pwd", cwd="/no/such/dir")
    with pytest.raises(InvalidArgumentException):
        s.files.read("/tmp")
    with pytest.raises(NotFoundException):
        s.files.list("/no/such/dir")
    with pytest.raises(AuthenticationException):
        s.commands.run("whoami", user="nosuchuser")

    assert s.beta_pause() is True
    assert s.beta_pause() is False
    assert Sandbox.pause(s.sandbox_id) is False
    with pytest.raises(SandboxException):
        s.commands.run("true")

    assert s.kill() is True
    assert s.is_running() is False
    started = time.monotonic()
    with pytest.raises(SandboxException) as gone:
        s.commands.run("true")
    assert re.search(r"not found|not running|killed", str(gone.value), re.I), gone.value
    assert time.monotonic() - started < 30, "a command to a killed sandbox fails fast"
    assert s.kill() is False


def test_sandbox_envs(track):
    s = track(Sandbox.create(metadata=meta("envs"), envs={"STASIS_SDK": "yes", "FOO": "sandbox"}))
    assert s.commands.run("echo $STASIS_SDK $FOO", envs={"FOO": "command"}).stdout == "yes command\n"


def test_files_metadata(track):
    """files.write(metadata=) sends X-Metadata-* headers (envd >= 0.6.2)."""
    s = track(Sandbox.create(metadata=meta("files-metadata")))
    s.files.write("/tmp/meta.txt", "m", metadata={"owner": "sdk-suite", "Kind": "Test"})
    st = s.files.get_info("/tmp/meta.txt")
    assert st.metadata == {"owner": "sdk-suite", "kind": "Test"}, st
    listed = next(e for e in s.files.list("/tmp") if e.name == "meta.txt")
    assert listed.metadata == {"owner": "sdk-suite", "kind": "Test"}, listed


# A tree for the EntryInfo flows: a 0755 dir, a 0640 file, links to both and a broken one.
ENTRY_TREE = " && ".join(
    [
        "mkdir -p /tmp/e/real && chmod 755 /tmp/e/real",
        "echo data > /tmp/e/real/f.txt && chmod 640 /tmp/e/real/f.txt",
        "ln -s real/f.txt /tmp/e/to-file && ln -s /tmp/e/real /tmp/e/to-dir",
        "ln -s missing /tmp/e/broken",
    ]
)


def test_entry_mode_is_the_permission_bits(track):
    s = track(Sandbox.create(metadata=meta("entry-mode")))
    s.commands.run(ENTRY_TREE)
    d = s.files.get_info("/tmp/e/real")
    assert (d.mode, d.permissions) == (0o755, "drwxr-xr-x"), d
    assert s.files.get_info("/tmp/e/real/f.txt").mode == 0o640
    assert [(e.name, e.mode) for e in s.files.list("/tmp/e/real")] == [("f.txt", 0o640)]


def test_symlink_shows_its_resolved_target_and_its_type(track):
    s = track(Sandbox.create(metadata=meta("entry-symlink")))
    s.commands.run(ENTRY_TREE)
    link = s.files.get_info("/tmp/e/to-file")
    assert (link.type, link.symlink_target, link.mode) == (FileType.FILE, "/tmp/e/real/f.txt", 0o640), link
    listed = {e.name: e for e in s.files.list("/tmp/e")}
    assert (listed["to-dir"].type, listed["to-dir"].symlink_target) == (FileType.DIR, "/tmp/e/real")
    # A broken link has no type (files.list leaves it out) and is its own target.
    assert "broken" not in listed, listed.get("broken")
    broken = s.files.get_info("/tmp/e/broken")
    assert (broken.type, broken.symlink_target) == (None, "/tmp/e/broken"), broken


def test_write_answers_with_the_metadata_it_stored(track):
    s = track(Sandbox.create(metadata=meta("write-metadata")))
    w = s.files.write("/tmp/m.txt", "one", metadata={"Owner": "sdk-suite"})
    assert w.metadata == {"owner": "sdk-suite"}, w
    plain = s.files.write("/tmp/plain.txt", "x")
    assert not plain.metadata, plain


def test_overwrite_without_metadata_clears_it(track):
    s = track(Sandbox.create(metadata=meta("overwrite-metadata")))
    s.files.write("/tmp/m.txt", "one", metadata={"owner": "sdk-suite", "kind": "a"})
    s.files.write("/tmp/m.txt", "two", metadata={"kind": "b"})
    assert s.files.get_info("/tmp/m.txt").metadata == {"kind": "b"}, "keys not sent again are gone"
    s.files.write("/tmp/m.txt", "three")
    st = s.files.get_info("/tmp/m.txt")
    assert not st.metadata, st
    assert s.files.read("/tmp/m.txt") == "three"


def test_remove_of_a_missing_path_succeeds(track):
    s = track(Sandbox.create(metadata=meta("remove-missing")))
    s.files.remove("/tmp/never-was")
    s.files.remove("/tmp/no/such/dir")
    assert s.files.exists("/tmp/never-was") is False


def test_read_of_proc_files_returns_their_content(track):
    s = track(Sandbox.create(metadata=meta("read-proc")))
    boot = s.files.read("/proc/sys/kernel/random/boot_id")
    assert re.fullmatch(r"[0-9a-f-]{36}\n", boot), repr(boot)
    assert boot == s.commands.run("cat /proc/sys/kernel/random/boot_id").stdout
    assert s.files.read("/proc/self/status").startswith("Name:")


def test_large_file_and_command_timeout(track):
    import hashlib

    s = track(Sandbox.create(metadata=meta("files-more")))
    big = bytes((i * 7919) & 0xFF for i in range(3 * 1024 * 1024))
    s.files.write("/tmp/big.bin", big)
    assert bytes(s.files.read("/tmp/big.bin", format="bytes")) == big
    out = s.commands.run("sha256sum /tmp/big.bin | cut -c1-64").stdout.strip()
    assert out == hashlib.sha256(big).hexdigest()

    from e2b import TimeoutException

    with pytest.raises(TimeoutException):
        s.commands.run("echo started > /tmp/t; sleep 30; echo done > /tmp/t", timeout=1.5)
    poll(
        "the timed-out process to be gone",
        lambda: not any("sleep 30" in " ".join(p.args) for p in s.commands.list()),
        timeout=10,
    )
    assert s.commands.run("cat /tmp/t").stdout == "started\n"
    assert s.commands.run("printf 'héllo ✓ 日本語\\n'").stdout == "héllo ✓ 日本語\n"


def test_async_sdk_flow(track):
    """The async client: other transport code, and streaming WatchDir instead of the
    sync SDK's polling watcher."""
    import asyncio

    from e2b import AsyncSandbox

    async def flow():
        s = await AsyncSandbox.create(metadata=meta("async"))
        track(s.sandbox_id)
        await s.commands.run('echo "Hello World" > /tmp/file.txt')
        assert await s.beta_pause() is True
        r = await AsyncSandbox.connect(s.sandbox_id)
        assert (await r.commands.run("cat /tmp/file.txt")).stdout == "Hello World\n"

        events = []
        await r.files.make_dir("/home/user/aw")
        w = await r.files.watch_dir("/home/user/aw", on_event=events.append, timeout=0)
        try:
            await r.files.write("/home/user/aw/y.txt", "y")
            deadline = time.monotonic() + 60
            while not any(e.name == "y.txt" and e.type == FilesystemEventType.CREATE for e in events):
                assert time.monotonic() < deadline, f"no create event: {events}"
                await asyncio.sleep(0.25)
        finally:
            await w.stop()

        chunks = []
        h = await r.commands.run("cat", background=True, stdin=True, on_stdout=chunks.append)
        await r.commands.send_stdin(h.pid, "async stdin\n")
        await r.commands.close_stdin(h.pid)
        res = await h.wait()
        assert res.stdout == "async stdin\n"
        assert await r.kill() is True

    asyncio.run(flow())
