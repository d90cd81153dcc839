"""The docs say what the code does: generated blocks are current, links resolve, and every
command flag a page names exists in that command's ``--help``.

Pages: every Markdown file of the checkout (docs/render.py's ``pages``), README.md first. A flag belongs to the command written before it in the same
code-block line or inline code span (``rfad-export triton-repo --max-batch N``); a span of flags
alone (`--reg kl`) belongs to the last command named in its paragraph, list item or table, else
to the command its section heading names. Flags of other programs (python, torchrun,
perf_analyzer, ...) are not checked, and a flag with no command in scope is an error: the page
must say whose flag it is.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from dataclasses import dataclass, replace
from pathlib import Path

import click
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_renderer():
    spec = importlib.util.spec_from_file_location("docs_render", ROOT / "docs" / "render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_renderer()
FENCE = re.compile(r"^\s*(```|~~~)")
LIST_ITEM = re.compile(r"^\s*([-*+]|\d+\.)\s")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
FLAG = re.compile(r"^[\[(]*(--[a-z0-9][a-z0-9_-]*)")
SEPARATORS = {"|", "||", "&&", ";", "&"}
FOREIGN = "foreign program"  # a command line of another program: its flags are not ours to check


# --- reading a page ------------------------------------------------------------------------

@dataclass(frozen=True)
class Span:
    """Inline code, or one logical line of a code block, with where it starts."""

    text: str
    line: int
    units: tuple[int, ...]  # its paragraph, list item, table row or code block; then a table's header row
    heading: tuple[int, ...]  # the enclosing headings' units, outermost first


def read_page(text: str) -> tuple[list[Span], set[int]]:
    """The page's code spans in order, and the units that are headings.

    Units: a paragraph, a list item, a code block, a heading; every row of a table is a unit of
    its own whose parent is the table's header row (a command named in the header applies to the
    rows, one named in a row does not carry over to the next).
    """
    spans, headings, stack = [], set(), []
    unit, header, fenced, pending, pending_line = 0, None, False, [], 0

    def add_spans(joined: str, line: int) -> None:
        units = (unit,) if header is None or header == unit else (unit, header)
        for match in CODE_SPAN.finditer(joined):
            spans.append(Span(match.group(2).strip(), line, units, tuple(i for _, i in stack)))

    def flush() -> None:
        nonlocal pending
        add_spans(" ".join(pending), pending_line)
        pending = []

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line, number = lines[i], i + 1
        i += 1
        if FENCE.match(line):
            flush()
            unit, header, fenced = unit + 1, None, not fenced
            continue
        if fenced:  # a code block: one span per logical line (backslash continuations joined)
            logical = line
            while logical.endswith("\\") and i < len(lines):
                logical, i = logical[:-1] + " " + lines[i].strip(), i + 1
            spans.append(Span(logical.strip(), number, (unit,), tuple(u for _, u in stack)))
            continue
        row = line.lstrip().startswith("|")
        if not row:
            header = None
        heading = HEADING.match(line)
        if not line.strip() or heading or LIST_ITEM.match(line) or row:
            flush()
            unit += 1
        if row:
            header = unit if header is None else header
            add_spans(line, number)
        elif heading:
            level = len(heading.group(1))
            stack[:] = [(lvl, u) for lvl, u in stack if lvl < level]
            stack.append((level, unit))
            headings.add(unit)
            add_spans(heading.group(2), number)
            unit += 1
        elif line.strip():
            pending_line = pending_line if pending else number
            pending.append(line.strip())
    flush()
    return spans, headings


# --- flags and the commands they belong to ------------------------------------------------

@dataclass(frozen=True)
class Use:
    """A flag a page names, the command path it belongs to (or FOREIGN), and where."""

    line: int
    command: str | None
    flag: str


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError:  # an unbalanced quote in prose: whitespace is enough to find flags
        return text.split("#", 1)[0].split()


def walk(text: str, problems: list[str], where: str) -> tuple[str | None, list[tuple[str | None, str]], bool]:
    """(the command in force at the end, [(command, flag)], whether the span names a command)."""
    programs = render.programs()
    modules = {target.split(":")[0]: name for name, target in programs.items()}
    tokens = _tokens(text)
    current, found, named = None, [], False
    expect_program = True
    i = 0
    while i < len(tokens):
        token = tokens[i]
        program = token.rsplit("/", 1)[-1]
        module = modules.get(token) if i and tokens[i - 1] == "-m" else None
        flag = FLAG.match(token)
        if program in programs or module:
            path = module or program
            command = render.load_program(path)
            while isinstance(command, click.Group) and i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                name = tokens[i + 1]
                if name in command.commands:
                    command, path, i = command.commands[name], f"{path} {name}", i + 1
                elif re.fullmatch(r"[a-z][a-z0-9-]*", name):
                    # A planned command may be named in prose; flags of one that does not exist are wrong.
                    if any(FLAG.match(rest) for rest in tokens[i + 2:]):
                        problems.append(f"{where}: `{path} {name}`: {path} has no command {name!r}")
                    path = FOREIGN
                    break
                else:
                    break
            current, named, expect_program = path, True, False
        elif token in SEPARATORS:
            expect_program = True
        elif flag:
            found.append((current, flag.group(1)))
            named = True
            expect_program = False
        elif expect_program:
            current, expect_program = FOREIGN, False
        i += 1
    return current, found, named


def named_flags(text: str, page: str = "page") -> tuple[list[Use], list[str]]:
    """Every flag ``text`` names with the command it belongs to, and the problems found on the way."""
    spans, headings = read_page(text)
    problems: list[str] = []
    named_in: dict[int, str] = {}  # unit -> the last command named in it
    uses = []
    for span in spans:
        start = _tokens(span.text)[:1]
        starts_with_flag = bool(start) and bool(FLAG.match(start[0]))
        end, found, named = walk(span.text, problems, f"{page}:{span.line}")
        scope = next((named_in[u] for u in span.units if u in named_in), None)
        if scope is None:
            scope = next((named_in[h] for h in reversed(span.heading) if h in named_in), None)
        uses += [Use(span.line, command if command is not None else scope, flag) for command, flag in found]
        if named and not starts_with_flag and not (span.units[0] in headings and span.units[0] in named_in):
            named_in[span.units[0]] = end
    return uses, problems


def options(path: str) -> set[str]:
    command = render.command(path)
    context = click.Context(command, info_name=path)
    return {name for param in command.get_params(context) if isinstance(param, click.Option) and not param.hidden
            for name in (*param.opts, *param.secondary_opts)}


def flag_problems(text: str, page: str = "page") -> list[str]:
    uses, problems = named_flags(text, page)
    for use in uses:
        if use.command == FOREIGN:
            continue
        if use.command is None:
            problems.append(f"{page}:{use.line}: {use.flag} has no command in scope (name the command beside it)")
        elif use.flag not in options(use.command):
            problems.append(f"{page}:{use.line}: {use.flag} is not an option of `{use.command}` (see its --help)")
    return problems


# --- links ---------------------------------------------------------------------------------

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _outside_code(text: str) -> str:
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        kept.append("" if fenced else CODE_SPAN.sub("", line))
    return "\n".join(kept)


def anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -, repeats -1, -2."""
    seen: dict[str, int] = {}
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        heading = None if fenced else HEADING.match(line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(2).strip().lower()).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            if seen[slug]:
                seen[f"{slug}-{seen[slug]}"] = 0
    return set(seen)


def link_problems(page: Path) -> list[str]:
    problems = []
    text = page.read_text(encoding="utf-8")
    for target in LINK.findall(_outside_code(text)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}: ({target})"
        if not resolved.exists():
            problems.append(f"{where}: {path} does not exist")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text(encoding="utf-8")):
            problems.append(f"{where}: {resolved.name} has no heading #{fragment}")
    return problems


# --- the tests -----------------------------------------------------------------------------

def test_generated_blocks_equal_what_the_code_renders():
    assert render.stale_pages() == [], "a page is stale: run python docs/render.py"


def test_a_changed_limit_or_default_makes_its_pages_stale(monkeypatch):
    import rfad.contract

    monkeypatch.setattr(rfad.contract, "DEFAULT_LIMITS", replace(rfad.contract.DEFAULT_LIMITS, steps=(1, 151)))
    stale = "\n".join(render.stale_pages())
    assert "docs/serving.md: pipeline-inputs" in stale and "settings-limits" in stale, stale
    monkeypatch.undo()
    monkeypatch.setattr(rfad.contract, "DEFAULTS", replace(rfad.contract.DEFAULTS, threshold=0.6))
    monkeypatch.setattr(rfad.contract, "MAX_IMAGE_BYTES", 10 * 2**20)
    stale = "\n".join(render.stale_pages())
    assert "settings-limits" in stale and "request-limits" in stale, stale


def test_a_malformed_or_unknown_block_is_an_error():
    with pytest.raises(ValueError, match="closed by"):
        render.render("<!-- generated:classes -->\nx\n<!-- /generated:canvas -->\n")
    with pytest.raises(ValueError, match="unknown block 'clases'"):
        render.render("<!-- generated:clases -->\n<!-- /generated:clases -->\n")
    with pytest.raises(ValueError, match="malformed"):
        render.render("<!-- generated:classes -->\nno end\n")


@pytest.mark.parametrize("page", render.pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert link_problems(page) == []


def test_the_readme_links_the_docs_index_and_the_index_every_page():
    readme = ROOT / "README.md"
    assert "docs/README.md" in LINK.findall(_outside_code(readme.read_text()))
    index = set(LINK.findall(_outside_code((ROOT / "docs" / "README.md").read_text())))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= index, f"docs/README.md does not link {sorted(pages - index)}"


def test_every_flag_a_page_names_is_in_its_commands_help():
    problems = []
    for page in render.pages():
        problems += flag_problems(page.read_text(encoding="utf-8"), str(page.relative_to(ROOT)))
    assert problems == []


def test_flags_are_checked_against_the_command_they_belong_to():
    text = "\n".join([
        "## `rfad-serve` — the server",
        "",
        "```bash",
        "rfad-client health --wait 60 && rfad-serve --repo r \\",
        "    --wait 3   # not a flag of rfad-serve",
        "python -m rfad.trainer.cli rfnet --tiny --frobnicate",
        "torchrun --nproc-per-node 2 train.py --anything",
        "```",
        "",
        "Flags alone take the heading's command: `--grpc-port`, `--fp16`.",
        "A named command takes over in its paragraph: `rfad-export onnx --models m`, then `--fp16`.",
        "- a list item starts afresh: `--http-port`",
        "",
        "| option | `rfad-train eval-rfft` |",
        "|---|---|",
        "| `--products` | `--epochs` |",
        "",
        "`rfad-train fly --high` names no command; `rfad-data` alone is a group: `--n`.",
        "## Plain heading",
        "`--orphan`",
    ])
    uses, problems = named_flags(text)
    owners = {(use.command, use.flag) for use in uses}
    assert {("rfad-client health", "--wait"), ("rfad-serve", "--repo"), ("rfad-serve", "--wait"),
            ("rfad-train rfnet", "--tiny"), ("rfad-serve", "--grpc-port"), ("rfad-export onnx", "--fp16"),
            ("rfad-serve", "--http-port"), ("rfad-train eval-rfft", "--products"),
            ("rfad-train eval-rfft", "--epochs"), ("rfad-data", "--n"), (None, "--orphan")} <= owners
    assert (FOREIGN, "--nproc-per-node") in owners and (FOREIGN, "--anything") in owners
    assert [p for p in problems if "has no command 'fly'" in p]
    reported = "\n".join(flag_problems(text))
    for bad in ("--wait is not an option of `rfad-serve`", "--frobnicate is not an option of `rfad-train rfnet`",
                "--fp16 is not an option of `rfad-serve`", "--epochs is not an option of `rfad-train eval-rfft`",
                "--n is not an option of `rfad-data`", "--orphan has no command in scope"):
        assert bad in reported, reported
    for good in ("--grpc-port", "--http-port", "--products", "--anything", "--tiny is"):
        assert good not in reported, reported


def test_every_comment_on_a_page_is_a_block_of_the_one_renderer():
    """One marker syntax: a page holds no other generated-looking comment (no second renderer's markers)."""
    comment = re.compile(r"<!--(.*?)-->", re.S)
    others = [f"{page.relative_to(ROOT)}: <!--{body}-->" for page in render.pages()
              for body in comment.findall(page.read_text(encoding="utf-8"))
              if not re.fullmatch(r" /?generated:[^>]*? ", body)]
    assert others == []
