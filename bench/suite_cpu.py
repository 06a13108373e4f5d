"""Where the test suite's CPU goes: each test's CPU, in its pytest worker and in the processes it waited for.

Run: PYTHONPATH=bench SUITE_CPU_LOG=/tmp/suite-cpu.jsonl PYTEST_ADDOPTS="-p suite_cpu" make test
then: .venv/bin/python bench/suite_cpu.py /tmp/suite-cpu.jsonl [--top 40]
As a pytest plugin (`-p suite_cpu`), it appends one JSON line per test: the worker's own CPU seconds (user +
system) over the test, setup and teardown included, and its children's (the processes it started and waited for:
`sweeper` subprocesses, servers stopped at the end of a module's fixture). Run as a script, it prints the totals,
the heaviest tests and the share of each test file. Processes that no test waits for (a session's servers stopped
after the last test) are not counted: compare the totals with `time make test`'s.
"""

import argparse
import collections
import json
import os
import resource
import time

import pytest


def _cpu() -> tuple[float, float]:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own, children = _cpu()
    started = time.monotonic()
    yield
    own_after, children_after = _cpu()
    with open(os.environ.get("SUITE_CPU_LOG", "suite-cpu.jsonl"), "a") as log:
        log.write(json.dumps({"test": item.nodeid, "own": round(own_after - own, 2),
                              "children": round(children_after - children, 2),
                              "wall": round(time.monotonic() - started, 2)}) + "\n")


def report(path: str, top: int) -> None:
    rows = [json.loads(line) for line in open(path)]
    own, children = sum(r["own"] for r in rows), sum(r["children"] for r in rows)
    print(f"{len(rows)} tests: {own / 60:.1f} min of CPU in the pytest workers, {children / 60:.1f} min in the "
          f"processes they waited for, {(own + children) / 60:.1f} min in all")
    print(f"\n{'CPU s':>7} {'own':>6} {'child':>6} {'wall':>6}  test")
    for r in sorted(rows, key=lambda r: -(r["own"] + r["children"]))[:top]:
        print(f"{r['own'] + r['children']:7.1f} {r['own']:6.1f} {r['children']:6.1f} {r['wall']:6.1f}  {r['test']}")
    by_file = collections.Counter()
    for r in rows:
        by_file[r["test"].split("::")[0]] += r["own"] + r["children"]
    print(f"\n{'CPU s':>7} {'share':>6}  file")
    for name, seconds in by_file.most_common():
        print(f"{seconds:7.1f} {seconds / (own + children):6.1%}  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", help="the JSON lines the plugin wrote")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    report(args.log, args.top)


if __name__ == "__main__":
    main()
