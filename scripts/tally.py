#!/usr/bin/env python3
"""Totals the log of scripts/test.sh in one true line.

    tally.py LOG SKIP_LOG

LOG holds every step's output between `== step NAME` and
`== step-exit NAME CODE` lines. Counted there:
  - cargo's test binaries: a `Running ...` or `Doc-tests ...` line opens a
    suite, and its last closing line (libtest's `test result:` or the
    multi-rank binaries' own `N passed, M failed[, K skipped]`) before the
    next suite counts. A binary prints its totals last: earlier closing
    lines are output of child runs that a failing test printed. A suite
    with no closing line died before its totals: one failure. Ignored tests
    are skipped.
  - `error: could not compile` (a suite that did not build): one failure.
  - the SLURM test's PASS, FAIL and SKIP lines.
  - the multi-rank binaries' `test NAME ... skipped: REASON` lines, listed
    (their closing line counts them).
  - a step that exited non-zero with no failure counted: one failure.
SKIP_LOG holds one `SKIPPED test: reason` line per libtest test that
skipped (mpinfer-testkit's `skip`); libtest counted those as passed, so they
move from passed to skipped here. Prints the skips and failures by name,
then `all: N passed, M failed, K skipped`.
"""
import re
import sys

SUITE = re.compile(r"^\s+(?:Running|Doc-tests) (.*)")
LIBTEST = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
PLAIN = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")
NO_BUILD = re.compile(r"^error: could not compile (`[^`]+`(?: \([^)]*\))?)")
NAMED_SKIP = re.compile(r"^test (\S+) \.\.\. skipped: (.*)")
SLURM = re.compile(r"^(PASS|FAIL|SKIP) (.*)")
STEP = re.compile(r"^== step (.*)")
STEP_EXIT = re.compile(r"^== step-exit (.*) (\d+)$")


class Tally:
    def __init__(self):
        self.passed = self.failed = self.skipped = 0
        self.failures, self.skips = [], []
        self.step = None
        self.step_failed = 0
        self.suite = None  # the suite whose output this is
        self.totals = None  # its last closing line's (passed, failed, skipped)

    def fail(self, why):
        self.failed += 1
        self.step_failed += 1
        self.failures.append(f"{self.step}: {why}")

    def close_suite(self):
        if self.suite is None:
            return
        if self.totals is None:
            self.fail(f"{self.suite} ended before printing its totals")
        else:
            passed, failed, skipped = self.totals
            self.passed += passed
            self.skipped += skipped
            self.failed += failed
            self.step_failed += failed
            if failed:
                self.failures.append(f"{self.step}: {failed} in {self.suite}")
        self.suite = self.totals = None

    def line(self, line):
        if m := STEP.match(line):
            self.close_suite()
            self.step, self.step_failed = m.group(1), 0
        elif m := STEP_EXIT.match(line):
            self.close_suite()
            if int(m.group(2)) != 0 and self.step_failed == 0:
                self.fail(f"exited {m.group(2)} without naming a failed test")
        elif m := SUITE.match(line):
            self.close_suite()
            self.suite = m.group(1)
        elif m := NO_BUILD.match(line):
            self.fail(f"{m.group(1)} did not build")
        elif self.suite is not None and (m := NAMED_SKIP.match(line)):
            # Counted by the suite's closing line; listed here by name.
            self.skips.append(f"{m.group(1)}: {m.group(2)}")
        elif self.suite is not None and (m := LIBTEST.match(line) or PLAIN.match(line)):
            self.totals = tuple(int(g or 0) for g in m.groups())
        elif self.suite is None and (m := SLURM.match(line)):
            kind, what = m.groups()
            if kind == "PASS":
                self.passed += 1
            elif kind == "FAIL":
                self.fail(f"SLURM {what}")
            else:
                self.skipped += 1
                self.skips.append(f"SLURM {what}")


def main(log, skip_log):
    t = Tally()
    with open(log, errors="replace") as f:
        for line in f:
            t.line(line.rstrip("\n"))
    t.close_suite()
    with open(skip_log, errors="replace") as f:
        for line in f:
            if line.startswith("SKIPPED "):
                t.passed -= 1
                t.skipped += 1
                t.skips.append(line[len("SKIPPED "):].rstrip("\n"))
    for s in t.skips:
        print(f"skipped: {s}")
    for s in t.failures:
        print(f"failed: {s}")
    print(f"all: {t.passed} passed, {t.failed} failed, {t.skipped} skipped")


if __name__ == "__main__":
    main(*sys.argv[1:3])
