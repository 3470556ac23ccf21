#!/usr/bin/env python3
"""Summarises the JUnit XML of the suites run by run.sh: one line per flow, then
`N passed, N failed, N skipped`. Exits 1 if anything failed.

Usage: report.py SUITE=XML:EXIT_CODE ... ['!failure outside the suites' ...]
(standard library only)
"""

import html
import sys
import xml.etree.ElementTree as ET


def first_line(text, limit=160):
    # node's junit reporter escapes attribute values twice
    for line in html.unescape(text or "").splitlines():
        line = line.strip()
        if line:
            return line if len(line) <= limit else line[: limit - 1] + "…"
    return ""


def main(args):
    passed = failed = skipped = 0
    lines = []
    for arg in args:
        if arg.startswith("!"):  # a failure outside the suites, e.g. the teardown
            lines.append(f"FAIL  {arg[1:]}")
            failed += 1
            continue
        suite, _, rest = arg.partition("=")
        path, _, code = rest.rpartition(":")
        code = int(code or 0)
        try:
            cases = list(ET.parse(path).getroot().iter("testcase"))
        except (OSError, ET.ParseError) as e:
            cases = None
            lines.append(f"FAIL  {suite}: no results ({e.__class__.__name__}; exit code {code})")
            failed += 1
            continue
        suite_failed = 0
        for case in cases:
            name = case.get("name", "?")
            secs = float(case.get("time") or 0)
            bad = case.find("failure")
            if bad is None:
                bad = case.find("error")
            skip = case.find("skipped")
            if bad is not None:
                why = first_line(bad.get("message")) or first_line(bad.text)
                lines.append(f"FAIL  {suite}: {name} ({secs:.1f} s) — {why}")
                failed += 1
                suite_failed += 1
            elif skip is not None:
                why = first_line(skip.get("message")) or first_line(skip.text)
                lines.append(f"SKIP  {suite}: {name} — {why}")
                skipped += 1
            else:
                lines.append(f"PASS  {suite}: {name} ({secs:.1f} s)")
                passed += 1
        if not cases:
            lines.append(f"FAIL  {suite}: no test ran (exit code {code})")
            failed += 1
        elif code != 0 and suite_failed == 0:
            lines.append(f"FAIL  {suite}: the runner exited with {code}")
            failed += 1
    print("\n".join(lines))
    summary = f"{passed} passed, {failed} failed"
    if skipped:
        summary += f", {skipped} skipped"
    print(summary)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
