#!/usr/bin/env python3
"""Finds upstream code citations that a reader cannot follow.

The project cites upstream code as `owner/repo@tag path:line` (for example
`kubevirt/kubevirt@v1.9.0 pkg/virt-controller/services/template.go:472`) or by symbol name.
A citation `file.ext:NNN` is reported when

- it is **bare**: the file has no directory (`template.go:472`), so it cannot be found even
  in the right repository; or
- it is **untagged**: it has a path that is not a file of this repository, and no
  `owner/repo@ref` is on the same line or on the three lines before it, so it is unknown
  which repository and which release the line number belongs to.

Paths of this repository (`src/cluster.rs:352`) need no tag. Continuations such as `:139-166`
(a second range of the file just named) are not citations of their own and are not checked.

Usage: scripts/check-citations.py [FILE...]   (default: every tracked text file)
       scripts/check-citations.py --self-test
Exit status 1 when something is reported, so CI or a reviewer can run it on changed files.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Extensions of the source files the project cites (Go: KubeVirt, Kubewarden's controller,
# kube-state-metrics; Rust: policy-server, kwctl, rust-vmm; C: Linux; charts and protos).
EXTENSIONS = "go|rs|c|h|py|proto|yaml|yml|sh|toml|md|json|bats"
CITATION = re.compile(
    r"(?<![\w./@-])"  # start of the token
    r"(?P<path>(?:[\w.-]+/)*[\w.-]+\.(?:" + EXTENSIONS + r"))"
    r":(?P<line>\d+)(?:-\d+)?"
    r"(?![\w.])"
)
# `owner/repo@ref`: a GitHub repository at a tag, branch or commit.
REPO_AT = re.compile(r"[\w.-]+/[\w.-]+@[\w.+-]+")
CONTEXT_LINES = 3

# Generated or vendored files: their text comes from elsewhere.
SKIP = (
    "Cargo.lock",
    "tests/data/expected/",
    "tests/data/cases.json",
    "tests/data/sessions/",
    "e2e.bats",
    "node-agent/src/device_plugin/api/",
    "docs/settings.schema.json",
    "scripts/check-citations.py",  # its examples
)


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], check=True, capture_output=True, text=True
    ).stdout
    return [ROOT / p for p in out.splitlines() if not p.startswith(SKIP)]


def local_path(path: str) -> bool:
    """A path of this repository (from its root, or relative to a crate such as node-agent/)."""
    return any((base / path).exists() for base in (ROOT, ROOT / "node-agent"))


def findings(lines: list[str]) -> list[tuple[int, str, str]]:
    """(1-based line, kind, citation) for every bare or untagged citation in `lines`."""
    found = []
    for i, text in enumerate(lines):
        for m in CITATION.finditer(text):
            path = m.group("path")
            cite = m.group(0)
            if "/" not in path:
                # A local file named without its directory is as unfollowable as an upstream one,
                # except the repository's top-level files (`Makefile`, `Cargo.toml`).
                if (ROOT / path).exists():
                    continue
                found.append((i + 1, "bare", cite))
            elif not local_path(path):
                context = lines[max(0, i - CONTEXT_LINES) : i + 1]
                if not any(REPO_AT.search(c) for c in context):
                    found.append((i + 1, "untagged", cite))
    return found


def check(files: list[Path]) -> int:
    count = 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError, FileNotFoundError):
            continue
        for line, kind, cite in findings(text.splitlines()):
            rel = f.resolve().relative_to(ROOT) if f.resolve().is_relative_to(ROOT) else f
            print(f"{rel}:{line}: {kind}: {cite}")
            count += 1
    if count:
        print(
            f"{count} citation(s) without `owner/repo@tag path:line`: "
            "name the repository and release, and the file's path in it (or cite by symbol)",
            file=sys.stderr,
        )
    return 1 if count else 0


def self_test() -> int:
    """The rule on known inputs, so a change to the pattern cannot silently stop finding."""
    cases = [
        # (text, expected kinds)
        ("see template.go:472", ["bare"]),
        ("(generic_device.go:333-336)", ["bare"]),
        ("kubevirt/kubevirt@v1.9.0 pkg/virt-controller/services/template.go:472", []),
        ("pkg/virt-handler/controller.go:267-278 decides", ["untagged"]),
        ("`src/cluster.rs:352` and Cargo.toml:1", []),
        ("`:139-166` of the same file", []),
        ("version 1.2.3:4 is not a file", []),
        # A link to a line is followable (the URL names repository and ref).
        ("https://github.com/o/r/blob/v1/a/b.go#L12", []),
        ("a.go:1 and b/c.go:2", ["bare", "untagged"]),
    ]
    failed = 0
    for text, want in cases:
        got = [kind for _, kind, _ in findings([text])]
        if got != want:
            print(f"FAIL {text!r}: got {got}, want {want}")
            failed += 1
    # Context: a repo@tag on an earlier line of the same comment covers the citation.
    block = ["// kubevirt/kubevirt@v1.9.0", "// pkg/virt-handler/cgroup/util.go:213-220"]
    if findings(block):
        print(f"FAIL context block: {findings(block)}")
        failed += 1
    far = ["// kubevirt/kubevirt@v1.9.0", "", "", "", "// pkg/a/b.go:1"]
    if [k for _, k, _ in findings(far)] != ["untagged"]:
        print(f"FAIL far context: {findings(far)}")
        failed += 1
    print("self-test:", "FAILED" if failed else "ok", f"({len(cases) + 2} cases)")
    return 1 if failed else 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        return self_test()
    files = []
    for a in argv[1:]:
        p = Path(a)
        files.extend(sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p])
    files = files or tracked_files()
    return check(files)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
