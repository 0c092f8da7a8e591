"""Audit the pinned set (constraints.txt) for known vulnerabilities with pip-audit.

A finding fails the run. A pin the vulnerability service could not check also fails it, with
one exception that must not pass for a clean audit: when the service answered for *none* of
the pins (a runner with no route to it), the run says loudly that no audit took place and
exits 0, so an offline CI runner still tests the code. Accepted findings are passed as
``--ignore-vuln ID`` and listed with their reason in SECURITY.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONSTRAINTS = Path(__file__).resolve().parents[1] / "constraints.txt"


def main(extra_arguments: list[str]) -> int:
    completed = subprocess.run(
        [
            *(sys.executable, "-m", "pip_audit"),
            *("--requirement", str(CONSTRAINTS), "--no-deps", "--disable-pip"),
            *("--format", "json", "--progress-spinner", "off"),
            *extra_arguments,
        ],
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError:
        sys.stderr.write(completed.stderr)
        print("dependency audit: pip-audit gave no report (see its errors above)")
        return 1
    dependencies = report["dependencies"]
    findings = [
        f"{dep['name']} {dep['version']}: {vuln['id']} "
        f"(fixed in {', '.join(vuln['fix_versions']) or 'no release yet'})"
        for dep in dependencies
        for vuln in dep.get("vulns", [])
    ]
    unchecked = [dep["name"] for dep in dependencies if "skip_reason" in dep]
    for line in findings:
        print(f"dependency audit: VULNERABLE {line}")
    if findings:
        return 1
    if unchecked and len(unchecked) == len(dependencies):
        print(
            f"dependency audit NOT PERFORMED: the vulnerability service checked none of the "
            f"{len(dependencies)} pins (no route to it from here); run `make audit` where it is "
            "reachable."
        )
        return 0
    if unchecked:
        print(f"dependency audit: could not check {len(unchecked)} pins: {', '.join(unchecked)}")
        return 1
    print(f"dependency audit: {len(dependencies)} pins checked, no known vulnerability")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
