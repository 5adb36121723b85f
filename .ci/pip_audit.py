"""Known vulnerabilities in the pinned runtime requirements, for CI (.ci/run, .gitlab-ci.yml).

Runs ``pip-audit -r requirements/base.lock --no-deps`` (the runtime dependencies and what they
pull in, exactly as the lock pins them: nothing is resolved or installed) against PyPI's
advisory data. A known vulnerability fails, listing each one. When the advisory
data cannot be had at all (no network, or an index that does not serve PyPI's per-release JSON
API) it prints one line, ``skipped: <reason>``, and succeeds: there is nothing to judge. Any
other failure of pip-audit fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REQUIREMENTS = "requirements/base.lock"
NOT_ON_INDEX = "Dependency not found on PyPI"
UNREACHABLE = (
    "NewConnectionError",
    "Max retries exceeded",
    "ConnectionError",
    "Temporary failure in name resolution",
    "Name or service not known",
    "timed out",
    "No matching distribution found",
)


def audit() -> tuple[dict[str, Any] | None, str]:
    """pip-audit's JSON report (None when it wrote none) and what it printed on stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "audit.json"
        run = subprocess.run(  # noqa: S603
            [
                sys.executable,
                "-m",
                "pip_audit",
                "--requirement",
                REQUIREMENTS,
                "--no-deps",
                "--disable-pip",
                "--progress-spinner",
                "off",
                "--format",
                "json",
                "--output",
                str(report),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        return (json.loads(report.read_text()) if report.exists() else None), run.stderr


def main() -> int:
    report, stderr = audit()
    if report is None:
        unreachable = [line for line in stderr.splitlines() if any(m in line for m in UNREACHABLE)]
        if unreachable:
            print(f"skipped: pip-audit could not reach PyPI ({unreachable[0].strip()[:200]})")
            return 0
        sys.stderr.write(stderr)
        print("pip-audit failed without a report")
        return 1

    dependencies = report["dependencies"]
    vulnerable = [d for d in dependencies if d.get("vulns")]
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            fixed_in = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            package = f"{dependency['name']} {dependency['version']}"
            print(f"{package}: {vuln['id']} (fixed in {fixed_in})")
    if vulnerable:
        print(f"{len(vulnerable)} vulnerable package(s) in {REQUIREMENTS}")
        return 1

    unaudited = sorted(d["name"] for d in dependencies if NOT_ON_INDEX in d.get("skip_reason", ""))
    audited = len(dependencies) - len(unaudited)
    if not audited:
        print(
            f"skipped: no advisory data for any of the {len(dependencies)} packages of "
            f"{REQUIREMENTS}: the package index does not serve PyPI's per-release JSON API"
        )
    elif unaudited:
        print(
            f"no known vulnerabilities in {audited} of {len(dependencies)} packages; "
            f"no advisory data for {', '.join(unaudited)}"
        )
    else:
        print(f"no known vulnerabilities in the {audited} packages of {REQUIREMENTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
