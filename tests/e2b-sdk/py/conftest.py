"""Shared fixtures and helpers of the Python conformance tests (current and legacy SDK).

Only the standard library is used here: the same file serves the venv with e2b 2.63.x
and the one with e2b 2.22.0. The SDK's Sandbox class is passed in where needed.
"""

import json
import os
import threading
import time
import urllib.error
import urllib.request

import pytest

for _v in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY"):
    if not os.environ.get(_v):
        raise RuntimeError(f"{_v} is not set: run the suite with tests/e2b-sdk/run.sh")

API_URL = os.environ["E2B_API_URL"]
API_KEY = os.environ["E2B_API_KEY"]
# Tags every sandbox of this run, so list queries see only their own sandboxes.
RUN_ID = os.environ.get("E2B_SDK_RUN_ID") or f"run{os.getpid()}{int(time.time())}"


def meta(flow, **extra):
    """Metadata for a sandbox of `flow` in this run."""
    return {"suite": RUN_ID, "flow": flow, **extra}


def poll(what, fn, timeout=60.0, interval=0.25):
    """Calls `fn` until it returns something truthy (returned); fails after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def api(method, path, body=None, api_key=API_KEY):
    """A control-plane request; returns (status, parsed JSON or text or None)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API_URL + path, data=data, method=method)
    req.add_header("X-API-KEY", api_key)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def has_template(name):
    status, body = api("GET", "/templates")
    assert status == 200, f"GET /templates: {status} {body}"
    return any(
        t.get("templateID") == name
        or name in (t.get("aliases") or [])
        or name in (t.get("names") or [])
        for t in body
    )


def list_ids(Sandbox, SandboxQuery, state, flow):
    """Ids of this run's sandboxes of `flow` that the list endpoint reports in `state`."""
    p = Sandbox.list(query=SandboxQuery(state=[state], metadata={"suite": RUN_ID, "flow": flow}))
    ids = []
    while p.has_next:
        ids += [s.sandbox_id for s in p.next_items()]
    return ids


def wait_paused(Sandbox, SandboxQuery, paused_state, flow, sandbox_id, timeout=90.0):
    """Waits until the list endpoint reports the sandbox as paused (list, unlike get_info,
    is never activity on a sandbox)."""
    poll(
        f"sandbox {sandbox_id} to be auto-paused",
        lambda: sandbox_id in list_ids(Sandbox, SandboxQuery, paused_state, flow),
        timeout=timeout,
        interval=0.5,
    )


class Reader:
    """Drains a sync CommandHandle in a thread (the sync SDK delivers output only while
    the handle is iterated), so the test can poll the output with a deadline."""

    def __init__(self, handle):
        self.handle = handle
        self.stdout = ""
        self.pty = b""
        self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for out, _err, pty in self.handle:
                if out:
                    self.stdout += out
                if pty:
                    self.pty += pty
        except Exception as e:  # noqa: BLE001 - recorded for the test to inspect
            self.error = e
        finally:
            self.done.set()


@pytest.fixture
def track():
    """Registers sandboxes (or ids) to kill when the test ends, also on failure."""
    ids = []

    def add(sbx):
        ids.append(sbx if isinstance(sbx, str) else sbx.sandbox_id)
        return sbx

    yield add
    for sid in ids:
        try:
            api("DELETE", f"/sandboxes/{sid}")
        except Exception as e:  # noqa: BLE001
            print(f"cleanup: could not kill {sid}: {e}")
