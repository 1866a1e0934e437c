"""Print a JUnit XML report's counts; fail when no test ran or any failed.

--no-skips fails when any test was skipped; --no-skips-but TEXT (repeatable) accepts only
skips whose reason contains one of the TEXTs (what that run leaves out on purpose);
--must-run MODULE (repeatable) fails when no test of that module ran.
"""

import sys
import xml.etree.ElementTree as ET


def values_of(flag: str) -> list[str]:
    args = sys.argv[2:]
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == flag]


def main() -> int:
    path = sys.argv[1]
    allowed = values_of("--no-skips-but")
    suites = ET.parse(path).getroot()  # noqa: S314
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    assert suite is not None, "no testsuite in report"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    print(f"{path}: {counts}")
    if counts["tests"] == 0:
        print("no test ran")
        return 1
    if counts["failures"] or counts["errors"]:
        return 1
    refused = []
    if "--no-skips" in sys.argv or allowed:
        for case in suite.iter("testcase"):
            skipped = case.find("skipped")
            if skipped is None:
                continue
            # A module skipped at collection says only "collection skipped" in its message;
            # pytest's reason is then the element's text.
            reason = f"{skipped.get('message') or ''} {skipped.text or ''}".strip()
            if not any(text in reason for text in allowed):
                refused.append(f"skipped: {case.get('classname')}.{case.get('name')}: {reason}")
    cases = suite.iter("testcase")
    ran = {case.get("classname", "") for case in cases if case.find("skipped") is None}
    for module in values_of("--must-run"):
        if not any(name == module or name.startswith(module + ".") for name in ran):
            refused.append(f"no test of {module} ran")
    for line in refused:
        print(line)
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
