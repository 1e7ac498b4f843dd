"""Every ``mona-tune ...`` command the READMEs show parses with the real argument parser.

Commands are taken from fenced code blocks (backslash-continued lines joined, trailing comments
dropped) and from inline code spans (which may wrap over lines), in README.md and cluster/README.md.
``ray job submit ... -- mona-tune ...`` lines are checked by the part after ``--``. Placeholders
(``DIR``, ``NAME``, ``HEAD_IP``, ``postgresql://...``) become ``<...>``
tokens, ``[--opt X]`` is checked with and without the optional part, ``a\\|b`` (an escaped table
pipe) as each alternative, and a trailing ``...`` is dropped. Only parsing is checked: nothing runs.

A flag fragment in inline code (```--beta 0.1```, ```--data-dir DIR```) must name a flag that
some ``mona-tune`` subcommand has; the "Real data and real models" section's fragments must parse
as flags of ``mona-tune train`` or ``mona-tune search``, the commands that take them.
"""

from __future__ import annotations

import argparse
import itertools
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from mona_tune.cli import build_parser
from mona_tune.errors import MonaError

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "cluster/README.md"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"`([^`]+)`")
_CAPS = re.compile(r"(?<![A-Za-z0-9_<])([A-Z][A-Z0-9_]*[A-Z0-9])(?![A-Za-z0-9_>])")
_ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class Snippet:
    where: str   # "README.md:100"
    text: str    # the command or fragment as written (continuations joined, whitespace collapsed)
    fenced: bool


def snippets(markdown: str, name: str) -> list[Snippet]:
    """Logical lines of fenced blocks, and inline code spans of the prose (and of fenced comments)."""
    out: list[Snippet] = []
    lines = markdown.splitlines()
    in_fence, prose, prose_start = False, [], 1
    i = 0

    def flush_prose():
        text = "\n".join(prose)
        for m in _SPAN.finditer(text):
            line = prose_start + text.count("\n", 0, m.start())
            out.append(Snippet(f"{name}:{line}", " ".join(m.group(1).split()), False))

    while i < len(lines):
        line = lines[i]
        if _FENCE.match(line):
            if not in_fence:
                flush_prose()
                prose = []
            else:
                prose_start = i + 2
            in_fence = not in_fence
            i += 1
            continue
        if not in_fence:
            prose.append(line)
            i += 1
            continue
        start, joined = i + 1, line
        while joined.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            joined = joined.rstrip()[:-1] + " " + lines[i].strip()
        i += 1
        out.append(Snippet(f"{name}:{start}", " ".join(joined.split()), True))
        comment = joined.partition(" #")[2]
        out.extend(Snippet(f"{name}:{start}", " ".join(m.group(1).split()), False)
                   for m in _SPAN.finditer(comment))
    if not in_fence:
        flush_prose()
    return out


def _tokens(text: str) -> list[str]:
    """Shell words, comments dropped, placeholders made single ``<...>`` tokens. A placeholder
    with spaces in it stays several words, as the shell splits it for a user who pastes the line."""
    text = text.replace("\\|", "|")
    try:
        words = shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote: not a command line
        return []
    out = []
    for w in words:
        if w == "...":
            continue
        if not w.startswith("-"):
            if "..." in w:          # postgresql://..., gs://...
                w = "<...>"
            w = _CAPS.sub(r"<\1>", w)
        out.append(w)
    return out


def _variants(argv: list[str]) -> list[list[str]]:
    """``[--opt X]`` with and without the optional part; ``a|b`` as each alternative."""
    pieces: list[list[list[str]]] = []  # each piece: the alternatives of a run of tokens
    i = 0
    while i < len(argv):
        tok = argv[i]
        if tok.startswith("[") and not tok.startswith("[]"):
            j = i
            while not argv[j].endswith("]") and j + 1 < len(argv):
                j += 1
            group = [t.strip("[]") for t in argv[i:j + 1]]
            pieces.append([[], [t for t in group if t]])
            i = j + 1
        elif "|" in tok and not tok.startswith("<"):
            pieces.append([[alt] for alt in tok.split("|")])
            i += 1
        else:
            pieces.append([[tok]])
            i += 1
    return [list(itertools.chain.from_iterable(combo)) for combo in itertools.product(*pieces)]


def command_argv(text: str) -> list[str] | None:
    """The arguments after ``mona-tune`` when the snippet runs it, else None.

    ``mona-tune`` must be the command: the first word (after ``VAR=value`` assignments), or the
    word after ``--`` (``ray job submit ... -- mona-tune ...``).
    """
    words = _tokens(text)
    if "mona-tune" not in words:
        return None
    at = words.index("mona-tune")
    before = words[:at]
    if before and before[-1] != "--" and not all(_ENV_ASSIGN.match(w) for w in before):
        return None
    argv = words[at + 1:]
    return argv or None  # a bare `mona-tune` names the program, it is no command


def parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` parses; else the parser's complaint."""
    argv = [a for a in argv if a not in ("--help", "-h")]  # help would print and exit 0
    try:
        parser.parse_args(argv)
    except MonaError as e:
        return str(e)
    except SystemExit as e:
        return f"SystemExit({e.code})"
    return None


def documented_commands(markdown: str, name: str) -> list[tuple[str, str, list[str]]]:
    """(where, text, argv) for every variant of every ``mona-tune`` command in the markdown."""
    found = []
    for s in snippets(markdown, name):
        argv = command_argv(s.text)
        if argv is not None:
            found.extend((s.where, s.text, v) for v in _variants(argv))
    return found


def check_commands(markdown: str, name: str, parser) -> list[str]:
    """One failure line per documented command that does not parse."""
    return [f"{where}: `mona-tune {' '.join(argv)}` (from `{text}`): {err}"
            for where, text, argv in documented_commands(markdown, name)
            if (err := parse_error(parser, argv)) is not None]


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def _all_docs() -> list[tuple[str, str, list[str]]]:
    out = []
    for name in DOCS:
        path = ROOT / name
        if path.is_file():
            out.extend(documented_commands(path.read_text(encoding="utf-8"), name))
    return out


COMMANDS = _all_docs()


@pytest.mark.parametrize("where, text, argv", COMMANDS,
                         ids=[f"{w}:{' '.join(a[:2])}" for w, _, a in COMMANDS])
def test_documented_command_parses(parser, where, text, argv):
    err = parse_error(parser, argv)
    assert err is None, f"{where}: `mona-tune {' '.join(argv)}` (from `{text}`) does not parse: {err}"


def test_the_extraction_finds_the_documented_commands():
    """Guard against an extractor that silently finds nothing (and so checks nothing)."""
    readme = [(w, a) for w, _, a in COMMANDS if w.startswith("README.md:")]
    subcommands = {a[0] for _, a in readme}
    assert {"search", "best", "ui", "tracking-server", "train", "compare", "data"} <= subcommands
    assert len(readme) >= 15
    texts = [t for _, t, _ in COMMANDS]
    assert any(t.startswith("ray job submit") for t in texts)  # the part after `--` is checked
    joined = [a for _, a in readme if a[0] == "tracking-server" and "--host" in a]
    assert joined, "the backslash-continued tracking-server command was not joined"
    assert all("#" not in tok for _, _, a in COMMANDS for tok in a)  # comments dropped


# ---------------------------------------------------------------- flag fragments in prose
def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _option_strings(sub)
    return found


def _fragments(markdown: str, name: str) -> list[Snippet]:
    return [s for s in snippets(markdown, name) if not s.fenced and s.text.startswith("--")]


def unknown_flags(markdown: str, name: str, known: set[str]) -> list[str]:
    """One line per ``--flag`` of an inline fragment that no mona-tune command has."""
    return [f"{s.where}: `{s.text}`: {w}" for s in _fragments(markdown, name)
            for w in _tokens(s.text) if w.startswith("--") and w.split("=")[0] not in known]


def fragments_not_parsing(markdown: str, name: str, parser) -> list[str]:
    """One line per inline flag fragment that parses neither after `train` nor after `search`."""
    bad = []
    for s in _fragments(markdown, name):
        argv = _tokens(s.text)
        errors = [parse_error(parser, [cmd, *argv]) for cmd in ("train", "search")]
        if all(errors):
            bad.append(f"{s.where}: `{s.text}`: train: {errors[0]}; search: {errors[1]}")
    return bad


@pytest.mark.parametrize("name", DOCS)
def test_flag_fragments_name_real_flags(parser, name):
    path = ROOT / name
    if not path.is_file():
        pytest.skip(f"{name} is absent")
    bad = unknown_flags(path.read_text(encoding="utf-8"), name, _option_strings(parser))
    assert not bad, "flags that no mona-tune command has:\n" + "\n".join(bad)


def _section(markdown: str, heading: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert m, f"README.md has no section '## {heading}'"
    return m.group(1)


def test_real_data_fragments_parse_as_run_flags(parser):
    """`--task pdebench-darcy --data-dir DIR --beta 0.1` and friends are flags of a real command."""
    section = _section((ROOT / "README.md").read_text(encoding="utf-8"), "Real data and real models")
    assert any("--beta" in s.text for s in _fragments(section, "README.md"))
    bad = fragments_not_parsing(section, "README.md (Real data and real models)", parser)
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- the checks can fail
SAMPLE = """\
Run `mona-tune train --task darcy --made-up-flag 3` for one run, or `mona-tune train --epochs 2`.

```bash
mona-tune search --task darcy \\
    --no-such-option 1 --storage DIR   # a comment --also-not-a-flag
ray job submit --address http://127.0.0.1:8265 -- \\
    mona-tune best --top 5 --bogus
ray job submit --address http://127.0.0.1:8265 -- mona-tune ui --port 5000   # fine
pip install 'mona-tune[postgres]'      # not a command of ours
mona-tune data make darcy --out DIR --format fno\\|pdebench
```

| `mona-tune best --task darcy --top 5 [--export DIR]` | fine |
| `mona-tune data make darcy --out DIR --format fno\\|hdf5` | one alternative is wrong |
"""


def test_self_check_made_up_flags_are_caught(parser):
    failures = check_commands(SAMPLE, "SAMPLE.md", parser)
    text = "\n".join(failures)
    assert len(failures) == 4, text
    assert "SAMPLE.md:1: `mona-tune train --task darcy --made-up-flag 3`" in text
    assert "SAMPLE.md:4:" in text and "--no-such-option" in text      # a continued line
    assert "SAMPLE.md:6:" in text and "--bogus" in text                # after ray job submit's --
    assert "SAMPLE.md:14:" in text and "hdf5" in text                  # one table alternative
    assert not any("--also-not-a-flag" in f.partition(" (from")[0] for f in failures)  # comment
    assert all("unrecognized arguments" in f or "invalid choice" in f for f in failures)


def test_self_check_extraction_details():
    cmds = {" ".join(a) for _, _, a in documented_commands(SAMPLE, "SAMPLE.md")}
    assert "ui --port 5000" in cmds                                    # ray job submit, fine
    assert "search --task darcy --no-such-option 1 --storage <DIR>" in cmds  # joined, placeholder
    assert {"best --task darcy --top 5", "best --task darcy --top 5 --export <DIR>"} <= cmds
    assert {"data make darcy --out <DIR> --format fno",
            "data make darcy --out <DIR> --format pdebench"} <= cmds
    assert not any("postgres" in c for c in cmds)                      # pip's argument
    assert command_argv("mona-tune tracking-server --backend-store-uri postgresql://... "
                        "--artifacts-destination <shared dir or bucket>") == [
        "tracking-server", "--backend-store-uri", "<...>", "--artifacts-destination",
        "<shared", "dir", "or", "bucket>"]
    assert command_argv("mona-tune search --address HEAD_IP:6379 ...") == [
        "search", "--address", "<HEAD_IP>:6379"]
    assert command_argv("`~/.cache/mona-tune`") is None and command_argv("mona-tune") is None


def test_self_check_bad_fragment_is_caught(parser):
    sample = ("- **PDEBench**: `--task pdebench-darcy --data-dir DIR --betta 0.1`; also "
              "`--gpus-per-trial 0.25` and `--resolution 64`.\n")
    known = _option_strings(parser)
    assert {"--beta", "--resolution", "--gpus-per-trial", "--allowed-hosts"} <= known
    assert unknown_flags(sample, "S.md", known) == [
        "S.md:1: `--task pdebench-darcy --data-dir DIR --betta 0.1`: --betta"]
    bad = fragments_not_parsing(sample, "S.md", parser)
    assert len(bad) == 1 and bad[0].startswith("S.md:1: `--task pdebench-darcy") and "--betta" in bad[0]
