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


def test_ci_e2b_template_behaviour(track):
    sandbox = track(Sandbox.create(metadata=meta("ci-e2b-template")))
    # matplotlib at E2B's version: boxplot still takes labels=, and the chart is data.
    boxes = sandbox.run_code(
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.set_title('Scores')\n"
        "ax.boxplot([[1, 2, 3, 4], [2, 3, 4, 9]], labels=['a', 'b'], patch_artist=True)\n"
        "plt.show()"
    )
    assert boxes.error is None, boxes.error
    chart = boxes.results[0].chart
    assert chart is not None
    assert chart.type.value == "box_and_whisker"
    assert [e.label for e in chart.elements] == ["a", "b"]

    # A Pillow image saved to a file is a PNG result.
    saved = sandbox.run_code(
        "from PIL import Image\nImage.new('RGB', (8, 8), 'blue').save('blue.png')"
    )
    assert saved.error is None, saved.error
    assert saved.results and saved.results[0].png

    # Other languages through the same SDK.
    assert sandbox.run_code("6 * 7", language="js").logs.stdout == ["42\n"]
    assert sandbox.run_code("const k: number = 'text'", language="ts").error is not None
    r = sandbox.run_code('Sys.getenv("FOO")', language="r", envs={"FOO": "bar"})
    assert r.results[0].text.strip() == '[1] "bar"'
    contexts = sandbox.list_code_contexts()
    assert [c.language for c in contexts[:2]] == ["python", "javascript"]
