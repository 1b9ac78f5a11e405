"""The README and the pages of docs/ against the real CLI, and against each other.

For README.md and every docs/*.md page:

- every ``aimbench ...`` line of a ```bash, ```sh or ```console block (``$ aimbench ...`` in the
  latter; ``torchrun ... -m aimbench ...`` too), and every inline ```aimbench ...``` in the text,
  names a real command and only options its ``--help`` lists;
- every option table (``<!-- options: CMD -->`` before it; ``tasks check`` for a subcommand,
  ``slurm`` for the Slurm options) lists exactly the command's options, with the defaults the
  command has (where it has a concrete one; a default the command derives, such as "the
  protocol's", is the table's to word), and every command has a table;
- every ```python block compiles;
- the blocks marked ``<!-- test: run -->`` run, in a fresh folder with the results home and the
  caches inside it, offline, and exit 0 (``<!-- test: run, e2e -->``: slow, run by make test-e2e);
- every relative link points at a file that exists (and at one of its headings, for ``#anchor``);
  the README links to every docs page, each page links back, and the README stays short.
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.core
import typer.main
from PIL import Image

from aimbench.cli import app
from aimbench.cli.options import CLUSTER_OPTIONS

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250
AIMBENCH = [sys.executable, "-m", "aimbench"]  # the aimbench this interpreter imports (PYTHONPATH included)
SHELL_LANGUAGES = ("bash", "sh", "console")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SLURM_NAMES = {name for name in CLUSTER_OPTIONS if name != "cluster"}  # the Slurm table; --cluster stays with each command
STOP_TOKENS = {"|", "|&", "||", ">", ">>", "2>", ";", "&&", "&"}


def page_name(page: Path) -> str:
    """``README.md``, ``docs/commands.md``: how tests and messages name a page."""
    return page.relative_to(REPO).as_posix() if page.is_relative_to(REPO) else page.name


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # 1-based line of the opening fence
    text: str
    marks: frozenset[str]  # from a '<!-- test: run, e2e -->' comment just above the block
    page: str = "README.md"


@functools.cache
def page_lines(page: Path) -> tuple[str, ...]:
    return tuple(page.read_text(encoding="utf-8").splitlines())


def fences(lines: tuple[str, ...]) -> list[tuple[int, int]]:
    """(opening, closing) 0-based line indices of the fenced blocks of a page."""
    found, index = [], 0
    while index < len(lines):
        if re.match(r"^```(\w*)\s*$", lines[index]):
            end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
            found.append((index, end))
            index = end
        index += 1
    return found


def fenced_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, with the marker comment just above each (if any)."""
    lines = page_lines(page)
    blocks = []
    for start, end in fences(lines):
        language = lines[start][3:].strip()  # what fences() matched: ```LANGUAGE
        above = next((lines[i] for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        mark = re.match(r"<!--\s*test:\s*(.*?)\s*-->", above.strip())
        marks = frozenset(m.strip() for m in mark.group(1).split(",")) if mark else frozenset()
        blocks.append(Block(language, start + 1, "\n".join(lines[start + 1 : end]), marks, page_name(page)))
    return blocks


def prose(page: Path) -> str:
    """The page with every fenced block blanked (its lines kept, empty), so line numbers still hold."""
    lines = list(page_lines(page))
    for start, end in fences(tuple(lines)):
        lines[start : end + 1] = [""] * (end + 1 - start)
    return "\n".join(lines)


def code_spans(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line, content) of every inline code span of ``text`` (any number of backticks)."""
    for span in re.finditer(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", text, re.S):
        yield text.count("\n", 0, span.start()) + 1, span.group(2).strip()


def option_tables(page: Path) -> list[tuple[int, str, list[list[str]]]]:
    """(line, NAME, the rows (cells) of the Markdown table below it) for each ``<!-- options: NAME -->``."""
    lines = page_lines(page)
    tables = []
    for index, line in enumerate(lines):
        marker = re.match(r"<!--\s*options:\s*([a-z][\w -]*?)\s*-->", line.strip())
        if not marker:
            continue
        start = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("|"))
        rows = []
        for row in lines[start + 2 :]:  # after the header and the |---| line
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]])
        tables.append((index + 1, marker.group(1), rows))
    return tables


def command_lines(block: Block) -> list[tuple[int, list[str]]]:
    """(line in the page, the words after ``aimbench``) for each aimbench command of a shell block."""
    found = []
    lines = block.text.split("\n")
    index = 0
    while index < len(lines):
        number, line = block.line + 1 + index, lines[index]
        while line.endswith("\\") and index + 1 < len(lines):  # continuation lines
            index += 1
            line = line[:-1] + " " + lines[index]
        index += 1
        if block.language == "console":
            if not line.startswith("$ "):
                continue  # output
            line = line[2:]
        words = shlex.split(line, comments=True)
        if "aimbench" not in words:
            continue
        start = words.index("aimbench")
        if start and words[start - 1] != "-m":  # "aimbench" as an argument of something else
            continue
        words = words[start + 1 :]
        cut = next((i for i, word in enumerate(words) if word in STOP_TOKENS), len(words))
        found.append((number, words[:cut]))
    return found


def shell_commands(page: Path) -> list[tuple[int, list[str]]]:
    return [line for block in fenced_blocks(page) if block.language in SHELL_LANGUAGES for line in command_lines(block)]


def inline_commands(page: Path) -> list[tuple[int, str]]:
    """(line, text after ``aimbench``) of every inline ```aimbench ...``` span in the page's text."""
    return [(number, content[len("aimbench") :].strip()) for number, content in code_spans(prose(page)) if re.match(r"aimbench\s", content)]


def resolve(words: list[str]) -> tuple[list[str], Any]:
    """The command path (``['tasks', 'check']``) a command line names, and its click command."""
    command: Any = typer.main.get_command(app)
    path = []
    for word in words:
        if not isinstance(command, typer.core.TyperGroup) or word not in command.commands:
            break
        command = command.commands[word]
        path.append(word)
    return path, command


@functools.cache
def help_text(path: tuple[str, ...]) -> str:
    """``aimbench PATH --help`` as a user sees it (wide, so nothing is cut)."""
    env = {**os.environ, "COLUMNS": "250", "TERMINAL_WIDTH": "250", "NO_COLOR": "1"}
    proc = subprocess.run([*AIMBENCH, *path, "--help"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def used_options(words: list[str]) -> list[str]:
    """The option names of a command line (``--format=latex`` -> ``--format``); negative numbers are values."""
    return [word.split("=", 1)[0] for word in words if word.startswith("-") and not re.match(r"-\d", word) and word != "-"]


# -- option tables: what a command's --help says, as rows -----------------------------------------------------------


def default_text(param: Any) -> str:
    """The default a table must show: ``required``, a value, a flag's name, ``off``, the help's own
    ``[default: ...]`` words, or ``–`` where the command derives it (the table words that itself)."""
    bracket = re.search(r"\\?\[default: (.*?)\]\.?$", (getattr(param, "help", None) or "").strip())
    if bracket:
        return bracket.group(1)
    if param.required:
        return "required"
    default: Any = param.default
    if isinstance(param, typer.core.TyperOption) and param.is_flag:
        if param.secondary_opts and default is not None:
            return param.opts[0] if default else param.secondary_opts[0]
        return "off" if not default else "on"
    if default is None or isinstance(default, (list, tuple)):
        return "–"
    return str(getattr(default, "value", default))


def option_names(param: Any) -> list[str]:
    return [*param.opts, *getattr(param, "secondary_opts", [])]


def leaf_commands(command: Any = None, path: tuple[str, ...] = ()) -> list[str]:
    """Every command a user runs (``eval``, ``tasks check``), as option tables name them."""
    command = command if command is not None else typer.main.get_command(app)
    if not isinstance(command, typer.core.TyperGroup):
        return [" ".join(path)]
    return [leaf for name, sub in command.commands.items() for leaf in leaf_commands(sub, (*path, name))]


def command_options(name: str) -> list[Any]:
    """The options of a table: a command's own (``tasks check`` for a subcommand; its Slurm options
    are in the Slurm table), or the Slurm options (``slurm``, as eval has them)."""
    root: Any = typer.main.get_command(app)
    if name == "slurm":
        return [p for p in root.commands["eval"].params if isinstance(p, typer.core.TyperOption) and p.name in SLURM_NAMES]
    command = root
    for word in name.split():
        command = command.commands[word]
    return [p for p in command.params if isinstance(p, typer.core.TyperOption) and p.name not in SLURM_NAMES and p.name != "help"]


def table_rows(name: str) -> str:
    """A starting point for a table (``python -c 'from tests.test_readme import table_rows; print(table_rows("eval"))'``)."""
    lines = ["| option | default | meaning |", "|---|---|---|"]
    for param in command_options(name):
        meaning = re.sub(r"\s*\\?\[default: .*?\]\.?$", ".", (param.help or "").strip())
        if getattr(param, "envvar", None):
            meaning += f" Env `{param.envvar}`."
        default = default_text(param)
        shown = default if default in ("required", "–", "off", "on") else f"`{default}`"
        names = ", ".join(f"`{n}`" for n in option_names(param))
        lines.append(f"| {names} | {shown} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(lines)


# -- links: relative targets and the headings they name -------------------------------------------------------------


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link text kept, lower case, punctuation dropped, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """The anchors of a page: its headings' slugs (``-1``, ``-2`` for repeats) and explicit ``<a id=...>``."""
    text = prose(page)
    found: set[str] = set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", text))
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M):
        base = slug(heading)
        found.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return frozenset(found)


def links(page: Path) -> list[tuple[int, str]]:
    """(line, target) of every Markdown link and image of a page's text, code left out."""
    text = prose(page)
    text = re.sub(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", lambda span: re.sub(r"[^\n]", " ", span.group(0)), text, flags=re.S)
    found = [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)]
    found += [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in re.finditer(r"^\s*\[[^\]]+\]:\s*(\S+)", text, re.M)]
    return found


def broken_link(page: Path, target: str) -> str | None:
    """Why a link target of ``page`` leads nowhere (None: it leads somewhere); web addresses are not checked."""
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return None
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"{target}: no file {page_name(file)}"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"{target}: {page_name(file)} has no heading with anchor #{anchor}"
    return None


# -- the tests --------------------------------------------------------------------------------------------------------


def test_the_pages_have_commands_tables_and_runnable_blocks() -> None:
    assert len(PAGES) > 5, "docs/ has its pages"
    assert sum(len(shell_commands(page)) for page in PAGES) > 30
    assert {name for page in PAGES for _, name, _ in option_tables(page)} >= {"eval", "pretrain", "report", "features", "slurm"}
    assert sum("run" in block.marks for page in PAGES for block in fenced_blocks(page)) >= 4
    assert sum("run" in block.marks for block in fenced_blocks(README)) >= 2, "the README's first steps run"


def problems(words: list[str], group_alone: bool = False) -> str | None:
    """What is wrong with the command line ``aimbench WORDS`` (None: nothing), by its command's ``--help``;
    ``group_alone``: a group named on its own (``aimbench tasks``, in prose) is fine."""
    path, command = resolve(words)
    if not path:
        return f"'aimbench {' '.join(words)}' names no aimbench command"
    if isinstance(command, typer.core.TyperGroup):
        return None if group_alone and len(words) == len(path) else f"'aimbench {' '.join(path)}' needs a subcommand"
    listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text(tuple(path))))
    unknown = [option for option in used_options(words[len(path) :]) if option not in listed]
    return f"'aimbench {' '.join(path)}' has no option {', '.join(unknown)}" if unknown else None


def inline_problems(text: str) -> str | None:
    """What is wrong with an inline ```aimbench TEXT``` (None: nothing)."""
    try:
        words = shlex.split(text.replace("\n", " "))
    except ValueError as exc:
        return f"'aimbench {text}' does not parse as a command line ({exc})"
    cut = next((i for i, word in enumerate(words) if word in STOP_TOKENS), len(words))
    return problems(words[:cut], group_alone=True)


def test_the_command_check_catches_what_it_should(tmp_path: Path) -> None:
    assert problems(["eval", "-b", "x", "--layers", "-1", "--format=latex"]) == "'aimbench eval' has no option --format"
    assert problems(["evaluate", "-b", "x"]) == "'aimbench evaluate -b x' names no aimbench command"
    assert problems(["tasks"]) == "'aimbench tasks' needs a subcommand"
    assert problems(["report", "--no-paper", "-f", "csv"]) is None and problems(["tasks", "check", "all", "--no-decode"]) is None
    block = Block(
        "console",
        1,
        "$ aimbench ls tasks  # a comment\noutput\n$ torchrun --nproc-per-node 2 -m aimbench eval -b x |& tee log",
        frozenset(),
    )
    assert command_lines(block) == [(2, ["ls", "tasks"]), (4, ["eval", "-b", "x"])]
    # a page whose commands no longer exist fails, in its blocks and in its text
    page = tmp_path / "gone.md"
    page.write_text("Run `aimbench tasks`, then `aimbench evaluate --fast`.\n\n```bash\naimbench run -b x\n```\n", encoding="utf-8")
    assert [problems(words) for _, words in shell_commands(page)] == ["'aimbench run -b x' names no aimbench command"]
    assert [(n, inline_problems(text)) for n, text in inline_commands(page)] == [
        (1, None),
        (1, "'aimbench evaluate --fast' names no aimbench command"),
    ]
    assert inline_problems("report cell 'aim-1b|dtd") is not None


@pytest.mark.parametrize(
    "page, number, words",
    [
        pytest.param(page_name(page), number, words, id=f"{page_name(page)}:L{number}")
        for page in PAGES
        for number, words in shell_commands(page)
    ],
)
def test_every_command_line_uses_options_its_help_lists(page: str, number: int, words: list[str]) -> None:
    problem = problems(words)
    assert problem is None, f"{page}:{number}: {problem}"


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_every_inline_command_uses_options_its_help_lists(page: Path) -> None:
    found = [f"{page_name(page)}:{number}: {problem}" for number, text in inline_commands(page) if (problem := inline_problems(text))]
    assert not found, "\n".join(found)


def test_every_command_has_an_option_table() -> None:
    documented = {name for page in PAGES for _, name, _ in option_tables(page)}
    assert set(leaf_commands()) | {"slurm"} <= documented, f"no option table for {set(leaf_commands()) - documented}"


@pytest.mark.parametrize(
    "page, name, rows",
    [pytest.param(page_name(page), name, rows, id=f"{page_name(page)}:{name}") for page in PAGES for _, name, rows in option_tables(page)],
)
def test_option_tables_match_the_commands(page: str, name: str, rows: list[list[str]]) -> None:
    documented = {tuple(re.findall(r"`(-[^`]+)`", row[0])): row[1].replace("`", "").strip() for row in rows}
    actual = {tuple(option_names(p)): default_text(p) for p in command_options(name)}
    assert set(documented) == set(actual), f"{page} {name}: missing {set(actual) - set(documented)}, stale {set(documented) - set(actual)}"
    wrong = {names: (documented[names], default) for names, default in actual.items() if default != "–" and documented[names] != default}
    assert not wrong, f"{page} {name}: documented default != the command's: {wrong}"


@pytest.mark.parametrize(
    "block", [b for page in PAGES for b in fenced_blocks(page) if b.language == "python"], ids=lambda b: f"{b.page}:L{b.line}"
)
def test_python_blocks_compile(block: Block) -> None:
    compile(block.text, f"{block.page}:{block.line}", "exec")


def test_the_readme_stays_short() -> None:
    lines = len(page_lines(README))
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES}): move reference text to docs/"
    assert "make test" in README.read_text(encoding="utf-8"), "the README shows the test command CI runs"


def test_the_link_check_catches_what_it_should(tmp_path: Path) -> None:
    assert slug("Slurm (`--cluster slurm`)") == "slurm---cluster-slurm"
    assert slug("What is measured, and how (the defaults)") == "what-is-measured-and-how-the-defaults"
    assert slug("Δ vs the paper: like with like") == "δ-vs-the-paper-like-with-like"
    page = tmp_path / "page.md"
    page.write_text(
        "# Top\n\n## Top\n\n[a](#top-1) [b](#nowhere) `[c](#in-code)` [d](gone.md) [e](https://example.org/x)"
        f" [f]({page.name}#top)\n\n```bash\necho [g](#in-block)\n```\n",
        encoding="utf-8",
    )
    assert [t for _, t in links(page)] == ["#top-1", "#nowhere", "gone.md", "https://example.org/x", f"{page.name}#top"]
    assert [t for _, t in links(page) if broken_link(page, t)] == ["#nowhere", "gone.md"]


@pytest.mark.parametrize("page", PAGES, ids=page_name)
def test_relative_links_lead_somewhere(page: Path) -> None:
    broken = [f"{page_name(page)}:{number}: {problem}" for number, target in links(page) if (problem := broken_link(page, target))]
    assert not broken, "\n".join(broken)


def test_the_readme_and_the_docs_link_each_other() -> None:
    linked = {(README.parent / target.partition("#")[0]).resolve() for _, target in links(README)}
    assert not [page_name(page) for page in PAGES[1:] if page not in linked], "the README links every docs page"
    for page in PAGES[1:]:
        opening = "\n".join(page_lines(page)[:6])
        assert re.search(r"\]\(\.\./README\.md\)", opening), (
            f"{page_name(page)} says what it is for and links back to the README at its top"
        )


def _write_images(words: list[str], folder: Path) -> None:
    """Images a command names that do not exist yet (``cat.jpg``), generated, so examples stay readable."""
    rng = np.random.default_rng(0)
    for word in words:
        path = folder / word
        if path.suffix.lower() in IMAGE_SUFFIXES and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(path)


def _run_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "AIMBENCH_RESULTS": str(folder / "results"),
        "AIMBENCH_CACHE": str(folder / "cache"),
        "COLUMNS": "120",
    }


def _runnable() -> list[Any]:
    return [
        pytest.param(block, id=f"{block.page}:L{block.line}", marks=[pytest.mark.e2e] if "e2e" in block.marks else [])
        for page in PAGES
        for block in fenced_blocks(page)
        if "run" in block.marks
    ]


@pytest.mark.parametrize("block", _runnable())
def test_marked_blocks_run(block: Block, tmp_path: Path) -> None:
    env = _run_env(tmp_path)
    if block.language == "python":
        script = tmp_path / "snippet.py"
        script.write_text(block.text)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, f"{block.page}:{block.line}\n{proc.stdout}\n{proc.stderr}"
        return
    commands = command_lines(block)
    assert commands, f"{block.page}:{block.line} is marked to run but has no aimbench command"
    for number, words in commands:
        _write_images(words, tmp_path)
        proc = subprocess.run([*AIMBENCH, *words], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, f"{block.page}:{number}: aimbench {shlex.join(words)}\n{proc.stdout}\n{proc.stderr}"
