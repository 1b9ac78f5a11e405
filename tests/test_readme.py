"""The README's commands and option tables against the real CLI.

- every ``aimbench ...`` line of a ```bash, ```sh or ```console block (``$ aimbench ...`` in the
  latter; ``torchrun ... -m aimbench ...`` too) names a real command and only options its
  ``--help`` lists;
- every option table (``<!-- options: CMD -->`` before it) lists exactly the command's options,
  with the defaults the command has (where it has a concrete one; a default the command derives,
  such as "the protocol's", is the table's to word);
- every ```python block compiles;
- the blocks marked ``<!-- test: run -->`` run, in a fresh folder with the results home and the
  caches inside it, offline, and exit 0 (``<!-- test: run, e2e -->``: slow, run by make test-e2e).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
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
SHELL_LANGUAGES = ("bash", "sh", "console")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SLURM_NAMES = {name for name in CLUSTER_OPTIONS if name != "cluster"}  # the Slurm table; --cluster stays with each command
STOP_TOKENS = {"|", "|&", "||", ">", ">>", "2>", ";", "&&", "&"}


@dataclass(frozen=True)
class Block:
    language: str
    line: int  # 1-based line of the opening fence
    text: str
    marks: frozenset[str]  # from a '<!-- test: run, e2e -->' comment just above the block
    options: str | None  # from a '<!-- options: eval -->' comment just above a table


def readme_blocks() -> list[Block]:
    """The fenced blocks of the README, with the marker comment just above each (if any)."""
    lines = README.read_text(encoding="utf-8").splitlines()
    blocks, index = [], 0
    while index < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[index])
        if not fence:
            index += 1
            continue
        end = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("```"))
        above = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        mark = re.match(r"<!--\s*test:\s*(.*?)\s*-->", above.strip())
        marks = frozenset(m.strip() for m in mark.group(1).split(",")) if mark else frozenset()
        blocks.append(Block(fence.group(1), index + 1, "\n".join(lines[index + 1 : end]), marks, None))
        index = end + 1
    return blocks


def option_tables() -> dict[str, list[list[str]]]:
    """``<!-- options: NAME -->`` -> the rows (cells) of the Markdown table below it."""
    lines = README.read_text(encoding="utf-8").splitlines()
    tables: dict[str, list[list[str]]] = {}
    for index, line in enumerate(lines):
        marker = re.match(r"<!--\s*options:\s*([\w-]+)\s*-->", line.strip())
        if not marker:
            continue
        start = next(i for i in range(index + 1, len(lines)) if lines[i].startswith("|"))
        rows = []
        for row in lines[start + 2 :]:  # after the header and the |---| line
            if not row.startswith("|"):
                break
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", row.strip())[1:-1]])
        tables[marker.group(1)] = rows
    return tables


def command_lines(block: Block) -> list[tuple[int, list[str]]]:
    """(line in the README, the words after ``aimbench``) for each aimbench command of a shell block."""
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


def shell_commands() -> list[tuple[int, list[str]]]:
    return [line for block in readme_blocks() if block.language in SHELL_LANGUAGES for line in command_lines(block)]


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
    proc = subprocess.run([str(Path(sys.executable).with_name("aimbench")), *path, "--help"], capture_output=True, text=True, env=env)
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


def command_options(name: str) -> list[Any]:
    """The options of a README table: a command's own (its Slurm options are in the Slurm table), or
    the Slurm options (``slurm``, as eval has them)."""
    root = typer.main.get_command(app)
    if name == "slurm":
        return [p for p in root.commands["eval"].params if isinstance(p, typer.core.TyperOption) and p.name in SLURM_NAMES]
    command = root.commands[name]
    return [p for p in command.params if isinstance(p, typer.core.TyperOption) and p.name not in SLURM_NAMES and p.name != "help"]


def table_rows(name: str) -> str:
    """A starting point for a README table (``python -c 'from tests.test_readme import table_rows; print(table_rows("eval"))'``)."""
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


# -- the tests --------------------------------------------------------------------------------------------------------


def test_the_readme_has_commands_tables_and_runnable_blocks() -> None:
    assert len(shell_commands()) > 30
    assert set(option_tables()) >= {"eval", "pretrain", "report", "features", "slurm"}
    assert sum("run" in block.marks for block in readme_blocks()) >= 4


def problems(words: list[str]) -> str | None:
    """What is wrong with the command line ``aimbench WORDS`` (None: nothing), by its command's ``--help``."""
    path, command = resolve(words)
    if not path:
        return f"'aimbench {' '.join(words)}' names no aimbench command"
    if isinstance(command, typer.core.TyperGroup):
        return f"'aimbench {' '.join(path)}' needs a subcommand"
    listed = set(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text(tuple(path))))
    unknown = [option for option in used_options(words[len(path) :]) if option not in listed]
    return f"'aimbench {' '.join(path)}' has no option {', '.join(unknown)}" if unknown else None


def test_the_command_check_catches_what_it_should() -> None:
    assert problems(["eval", "-b", "x", "--layers", "-1", "--format=latex"]) == "'aimbench eval' has no option --format"
    assert problems(["evaluate", "-b", "x"]) == "'aimbench evaluate -b x' names no aimbench command"
    assert problems(["tasks"]) == "'aimbench tasks' needs a subcommand"
    assert problems(["report", "--no-paper", "-f", "csv"]) is None and problems(["tasks", "check", "all", "--no-decode"]) is None
    block = Block(
        "console",
        1,
        "$ aimbench ls tasks  # a comment\noutput\n$ torchrun --nproc-per-node 2 -m aimbench eval -b x |& tee log",
        frozenset(),
        None,
    )
    assert command_lines(block) == [(2, ["ls", "tasks"]), (4, ["eval", "-b", "x"])]


@pytest.mark.parametrize("number, words", shell_commands(), ids=lambda value: f"L{value}" if isinstance(value, int) else "")
def test_every_readme_command_uses_options_its_help_lists(number: int, words: list[str]) -> None:
    problem = problems(words)
    assert problem is None, f"README line {number}: {problem}"


@pytest.mark.parametrize("name", ["eval", "pretrain", "report", "features", "slurm"])
def test_option_tables_match_the_commands(name: str) -> None:
    rows = option_tables()[name]
    documented = {tuple(re.findall(r"`(-[^`]+)`", row[0])): row[1].replace("`", "").strip() for row in rows}
    actual = {tuple(option_names(p)): default_text(p) for p in command_options(name)}
    assert set(documented) == set(actual), f"{name}: missing {set(actual) - set(documented)}, stale {set(documented) - set(actual)}"
    wrong = {names: (documented[names], default) for names, default in actual.items() if default != "–" and documented[names] != default}
    assert not wrong, f"{name}: README default != the command's: {wrong}"


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.language == "python"], ids=lambda b: f"L{b.line}")
def test_python_blocks_compile(block: Block) -> None:
    compile(block.text, f"README.md:{block.line}", "exec")


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
        pytest.param(block, id=f"L{block.line}", marks=[pytest.mark.e2e] if "e2e" in block.marks else [])
        for block in readme_blocks()
        if "run" in block.marks
    ]


@pytest.mark.parametrize("block", _runnable())
def test_marked_blocks_run(block: Block, tmp_path: Path) -> None:
    env = _run_env(tmp_path)
    if block.language == "python":
        script = tmp_path / "snippet.py"
        script.write_text(block.text)
        proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
        assert proc.returncode == 0, f"README.md:{block.line}\n{proc.stdout}\n{proc.stderr}"
        return
    commands = command_lines(block)
    assert commands, f"README.md:{block.line} is marked to run but has no aimbench command"
    for number, words in commands:
        _write_images(words, tmp_path)
        proc = subprocess.run(
            [str(Path(sys.executable).with_name("aimbench")), *words], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600
        )
        assert proc.returncode == 0, f"README.md:{number}: aimbench {shlex.join(words)}\n{proc.stdout}\n{proc.stderr}"
