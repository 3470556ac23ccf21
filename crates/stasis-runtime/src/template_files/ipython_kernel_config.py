# IPython kernel settings of the Stasis code-interpreter template.
c = get_config()  # noqa: F821

# Plain tracebacks: results are read by programs, not terminals.
c.InteractiveShell.colors = "NoColor"
# Rich results (e2b/data, e2b/chart) for every kernel.
c.InteractiveShellApp.exec_files = ["/usr/local/share/stasis/ipython_startup.py"]
