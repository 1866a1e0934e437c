"""Print a JUnit XML report's counts; with --no-skips, fail when any test was skipped;
with --must-run MODULE (repeatable), fail when no test of that module ran."""

import sys
import xml.etree.ElementTree as ET


def main() -> int:
    path = sys.argv[1]
    suites = ET.parse(path).getroot()  # noqa: S314
    suite = suites if suites.tag == "testsuite" else suites.find("testsuite")
    assert suite is not None, "no testsuite in report"
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    print(f"{path}: {counts}")
    if counts["tests"] == 0:
        print("no test ran")
        return 1
    if "--no-skips" in sys.argv and counts["skipped"]:
        for case in suite.iter("testcase"):
            skipped = case.find("skipped")
            if skipped is not None:
                name = f"{case.get('classname')}.{case.get('name')}"
                print(f"skipped: {name}: {skipped.get('message')}")
        return 1
    args = sys.argv[2:]
    required = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--must-run"]
    ran = {case.get("classname", "") for case in suite.iter("testcase")}
    for module in required:
        if not any(name == module or name.startswith(module + ".") for name in ran):
            print(f"no test of {module} ran")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
