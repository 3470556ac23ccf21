"""Code-interpreter flows (PyPI e2b-code-interpreter 2.11.x): /execute on port 49999
through E2B_SANDBOX_URL. They need the template code-interpreter-v1; without it they are
skipped."""

import pytest
from e2b_code_interpreter import Sandbox

from conftest import has_template, meta

TEMPLATE = "code-interpreter-v1"
pytestmark = pytest.mark.skipif(
    not has_template(TEMPLATE), reason=f"template {TEMPLATE} is not listed by GET /templates"
)


def test_ci_pause_connect(track):
    sandbox = track(Sandbox.create(metadata=meta("ci-pause")))
    first = sandbox.run_code("x = 42")
    assert first.error is None, first.error
    assert sandbox.beta_pause() is True

    resumed = Sandbox.connect(sandbox.sandbox_id)
    assert hasattr(resumed, "run_code")
    assert resumed.run_code("x").text == "42"
    assert resumed.kill() is True


def test_ci_stdout_errors_contexts(track):
    sandbox = track(Sandbox.create(metadata=meta("ci-misc")))
    out = sandbox.run_code('print("hi"); 6 * 7')
    assert out.logs.stdout == ["hi\n"]
    assert out.text == "42"

    bad = sandbox.run_code("1 / 0")
    assert bad.error is not None and bad.error.name == "ZeroDivisionError"

    ctx = sandbox.create_code_context(cwd="/tmp")
    assert ctx.cwd == "/tmp"
    assert sandbox.run_code("import os; os.getcwd()", context=ctx).text == "/tmp"
    assert sandbox.run_code('"x" in globals()', context=ctx).text == "False"
