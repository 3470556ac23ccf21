"""Rich results for the Stasis code interpreter.

Loaded by every IPython kernel of the code-interpreter template. It registers
formatters for two MIME types the E2B SDKs read besides the standard ones:

* ``e2b/data``: a pandas DataFrame as a mapping of column name to values;
* ``e2b/chart``: a matplotlib figure described by the ``e2b_charts`` package.

Both formatters stay out of the way of everything else: they only look at objects of
modules the user has already imported, so plain results pay no import cost.

It also makes a Pillow image saved to a file show up as a result (a PNG), as in E2B,
and keeps ``Image.show()`` from looking for a desktop viewer.
"""

import os
import sys

from IPython import get_ipython
from IPython.core.formatters import BaseFormatter
from traitlets import ObjectName, Unicode


def _columns(frame, pandas):
    out = {}
    for name, values in frame.to_dict(orient="list").items():
        out[str(name)] = [
            v.isoformat() if isinstance(v, pandas.Timestamp) else v for v in values
        ]
    return out


class DataFrameFormatter(BaseFormatter):
    format_type = Unicode("e2b/data")
    print_method = ObjectName("_repr_e2b_data_")
    _return_type = (dict,)

    def __call__(self, obj):
        pandas = sys.modules.get("pandas")
        if pandas is not None and isinstance(obj, pandas.DataFrame):
            return _columns(obj, pandas)
        return super().__call__(obj)


class ChartFormatter(BaseFormatter):
    format_type = Unicode("e2b/chart")
    print_method = ObjectName("_repr_e2b_chart_")
    _return_type = (dict,)

    def __call__(self, obj):
        figure = sys.modules.get("matplotlib.figure")
        if figure is None or not isinstance(obj, figure.Figure):
            return super().__call__(obj)
        try:
            from e2b_charts import chart_figure_to_dict

            return chart_figure_to_dict(obj)
        except Exception:  # a figure the extractor does not understand: no chart
            return None


_shell = get_ipython()
if _shell is not None:
    _display = _shell.display_formatter
    _display.formatters["e2b/data"] = DataFrameFormatter(parent=_display)
    _display.formatters["e2b/chart"] = ChartFormatter(parent=_display)


def _show_saved_images():
    try:
        from IPython.display import display
        from PIL import Image, ImageShow
    except ImportError:
        return
    save = Image.Image.save

    def save_and_show(self, fp, format=None, **params):
        # A file name, not a stream: the user is saving a picture, show it.
        if isinstance(fp, (str, os.PathLike)):
            display(self)
        return save(self, fp, format, **params)

    save_and_show.__doc__ = save.__doc__
    Image.Image.save = save_and_show
    # Without a display there is no viewer to start; the image is shown inline.
    ImageShow.UnixViewer.show_file = lambda self, path, **options: 0


if _shell is not None:
    _show_saved_images()
