"""Every reference in the repository points at something in the repository (docs/design.md §1).

Checked in every tracked text file (markdown, Python, YAML, shell): paths that start with a top-level
entry (``trainer/run.py``, ``docs/operations.md``, ``configs/optimizer/``) must exist, ``<name>`` and
``*`` being wildcards; in markdown, relative links must exist and their ``#anchors`` must be headings of
the target page (GitHub's rules). A page that tells the reader to create a file declares it with
``<!-- file: PATH -->`` (docs/adding-a-variant.md), and ``ref-ok: PATH`` in a comment exempts a path a file
names on purpose although it is gone (a removed script in a changelog line). tests/ is not scanned: tests
name paths that do not exist on purpose (fixtures, the files a test writes).
"""

from __future__ import annotations

import glob
import re
import subprocess
from pathlib import Path

from cli import REPO

TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".sh", ".sbatch", ".toml"}
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PATH = re.compile(r"(?<![\w./-])([A-Za-z_.][\w.-]*/[\w.<>*/-]*)")
EXTENSION = re.compile(r"(.*?\.(?:py|sh|md|yaml|yml|toml|json|jsonl|csv|png|sbatch|txt|pt))(?![\w-])")
# What a path lives under only once a run has made it, or outside the repository (runs, data).
GENERATED = ("runs/", "outputs/", "multirun/", ".venv/", "wandb/", "results/digits/efficient/bench")


def tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        REPO / f
        for f in out
        if Path(f).suffix in TEXT_SUFFIXES and not f.startswith("tests/") and (REPO / f).is_file()
    ]


def top_level() -> set[str]:
    return {p.name for p in REPO.iterdir() if not p.name.startswith(".git")} - {".venv", "runs"}


def slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text.replace("`", ""))
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found, seen, fence = set(), {}, False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fence = not fence
        if fence or not line.startswith("#"):
            continue
        base = slug(line.lstrip("#"))
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return found


def exists(rel: str) -> bool:
    pattern = re.sub(r"<[^>]*>", "*", rel.rstrip("/"))
    return bool(glob.glob(str(REPO / pattern))) if "*" in pattern else (REPO / pattern).exists()


def path_references(text: str, tops: set[str]) -> list[tuple[int, str]]:
    """(line, path) for every token that names a repository path."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for match in PATH.finditer(line):
            token = match.group(1).rstrip(".,;:)")
            if token.split("/")[0] not in tops or "://" in line[max(0, match.start() - 3) : match.start()]:
                continue
            file_part = EXTENSION.match(token)
            found.append((n, file_part.group(1) if file_part else token))
    return found


def broken_references(files: list[Path]) -> list[str]:
    tops = top_level()
    broken = []
    for path in files:
        text = path.read_text(errors="replace")
        allowed = set(re.findall(r"<!-- file: (\S+) -->", text)) | set(re.findall(r"ref-ok: (\S+)", text))
        where = path.relative_to(REPO)
        for n, ref in path_references(text, tops):
            if ref in allowed or ref.startswith(GENERATED) or exists(ref):
                continue
            broken.append(f"{where}:{n}: {ref} does not exist")
        if path.suffix != ".md":
            continue
        for n, line in enumerate(text.splitlines(), 1):
            for target in LINK.findall(line):
                if re.match(r"[a-z]+:", target):
                    continue
                file, _, anchor = target.partition("#")
                dest = (path.parent / file).resolve() if file else path
                if not dest.exists():
                    broken.append(f"{where}:{n}: link {target} does not exist")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                    broken.append(f"{where}:{n}: link {target}: no heading #{anchor} in {dest.name}")
    return broken


def test_every_reference_points_at_a_file_in_the_repository():
    broken = broken_references(tracked_files())
    assert not broken, "\n".join(broken)


def test_the_checker_finds_a_broken_path_link_and_anchor(tmp_path, monkeypatch):
    page = REPO / "docs" / "_reference_check_probe.md"
    page.write_text(
        "See `trainer/no_such_file.py` and [ops](operations.md#no-such-heading) and [x](missing.md).\n"
        "Fine: `trainer/run.py`, [ops](operations.md#exit-codes), `configs/optimizer/<name>.yaml`.\n"
    )
    try:
        broken = broken_references([page])
    finally:
        page.unlink()
    assert len(broken) == 3, broken
    assert any("trainer/no_such_file.py" in b for b in broken)
    assert any("no heading #no-such-heading" in b for b in broken)
    assert any("missing.md" in b for b in broken)
