"""Every command a user copies from the docs runs as written: each flag it gives one of our tools is a flag
that tool has, each value of a flag with fixed choices is one of them, a complete command (no ``...``) gives
every option its tool requires, and the repo scripts and repo paths it names exist.

Where the commands come from: fenced code blocks and inline code spans of README.md and docs/*.md (a span is
a fragment: ``fairseq-train --int8-qat-updates 3``), commands inside the comments of those blocks (``# queue:
NAME -- bash scripts/x.sh ...``), and the usage lines of the header comments of the shell scripts
(scripts/, scripts/recipes/, data_prep/, bench/, docs/results/tools/). Within a code block, ``name=(...)``
arrays and ``NAME=value`` / ``NAME=${NAME:-value}`` variables are expanded as bash would; anything else with a
``$`` is a placeholder, as are ``...``, ``<thing>``, globs and ALL-CAPS words; ``[--opt v]`` is optional.

What each tool accepts is read off the tool, never listed here:
  * console scripts (setup.py's entry points), ``python -m fairseq_kd...`` and ``python <repo script>.py``: the
    argparse parser the program builds, caught when it first parses (nothing runs after that; a program
    without argparse, ``python -m fairseq_kd.methods``: the flags of its usage docstring);
  * fairseq-train / -generate / ... (``fairseq_cli``, through its console entry points): the parser
    ``fairseq.options.parse_args_and_arch`` completes for the command's --user-dir, --task, --arch,
    --criterion, --optimizer ... (our criteria, task and models are registered dataclasses and models); a
    fragment that names no --task / --arch / --criterion gets any of fairseq's default or our registered ones;
  * shell scripts: the variables declared before the script's option parser runs (data_prep/common.sh's
    ``parse_flags``, which takes ``--name value`` for every declared ``name``, sourced files included), or the
    names of a ``case "${name}" in a|b|c) printf -v`` parser, or the ``--opt) var="$2"; shift 2`` arms of a
    ``case "$1"`` loop, plus the value-less switches of their ``case`` patterns (``--fp16|--bf16|--amp)``); a
    value is one of a variable's choices when a ``case "${var}" in a|b) ;; *) usage_error`` check refuses others.
A flag whose help (or the script variable's comment) says it carries "extra <tool> flags" has its value checked
as a fragment of that tool's command too (``--train-args``, ``--method-args``, ``--distill-args``, ``--extra``).
"""
import argparse
import ast
import contextlib
import functools
import importlib
import importlib.metadata
import io
import logging
import re
import runpy
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

from tests import helpers

pytestmark = pytest.mark.unit

REPO = helpers.REPO
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
SCRIPTS = sorted(p for pattern in ("scripts/*.sh", "scripts/*/*.sh", "data_prep/*.sh", "bench/*.sh",
                                   "docs/results/tools/*.sh") for p in REPO.glob(pattern))
WRAPPERS = {"time", "nohup", "setsid", "exec", "env", "command", "do", "then", "else", "{", "(", "!"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


# ---------------------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Command:
    source: str            # file the command is written in
    line: int              # its first line there
    text: str              # the command line, continuations joined
    fragment: bool = False  # an inline span / nested value: the rest of the command is implied
    context: Dict[str, str] = field(default_factory=dict)  # fairseq selectors of the outer command (nested)
    via: str = ""           # nested: the outer tool and flag whose value this is

    def where(self) -> str:
        short = self.text if len(self.text) < 90 else self.text[:87] + "..."
        return f"{self.source}:{self.line}: `{short}`" + (f" (the value of {self.via})" if self.via else "")


def shell_state(text: str) -> Tuple[bool, int]:
    """(inside an open quote, open parenthesis depth) at the end of ``text``; ``#`` comments are skipped."""
    quote, depth, i, prev = "", 0, 0, " "
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c == "\\":
            i += 1
        elif c in "'\"":
            quote = c
        elif c == "#" and prev in " \t\n(":
            nl = text.find("\n", i)
            if nl < 0:
                break
            i = nl
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        prev = c
        i += 1
    return bool(quote), depth


def strip_comment(text: str) -> str:
    """``text`` without its trailing shell comment (a ``#`` that starts a word outside quotes)."""
    quote, prev = "", " "
    for i, c in enumerate(text):
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
        elif c in "'\"":
            quote = c
        elif c == "#" and prev in " \t":
            return text[:i]
        prev = c
    return text


def split_segments(text: str) -> List[str]:
    """Simple commands of a command line: split at ``|`` (between spaces), ``||``, ``&&``, ``;`` and a
    background ``&``, outside quotes. (``beam|greedy`` without spaces is the docs' "one of" notation.)"""
    out, cur, quote, i = [], [], "", 0
    while i < len(text):
        c = text[i]
        if quote:
            if c == quote and text[i - 1] != "\\":
                quote = ""
            cur.append(c)
        elif c in "'\"":
            quote = c
            cur.append(c)
        elif text.startswith(("&&", "||"), i):
            out.append("".join(cur))
            cur = []
            i += 1
        elif (c == ";" or (c == "|" and text[i - 1:i].isspace() and text[i + 1:i + 2].isspace())
              or (c == "&" and text[i - 1:i] != ">" and text[i + 1:i + 2] != ">")):  # not 2>&1, &>
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def expand(text: str, variables: Dict[str, Tuple[str, bool]]) -> str:
    """Expand the code block's own variables in ``text``: arrays ``"${a[@]}"`` to their words, ``"$v"`` to one
    quoted word, an unquoted ``$v`` to its words (``variables``: name -> (raw text, is an array))."""
    for name in sorted(variables, key=len, reverse=True):
        value, is_array = variables[name]
        if is_array:
            text = re.sub(r'"?\$\{%s\[[@*]\]\}"?' % re.escape(name), lambda m: value, text)
            continue
        word = shlex.quote(value)
        text = re.sub(r'"\$(?:%s\b|\{%s\})"' % (re.escape(name), re.escape(name)), lambda m: word, text)
        text = re.sub(r'\$(?:%s\b|\{%s\})' % (re.escape(name), re.escape(name)), lambda m: value, text)
    return text


def logical_lines(lines: Sequence[str], first: int) -> List[Tuple[int, str]]:
    """Join ``\\`` continuations and open quotes / parentheses: (line number, text) of each shell line."""
    out, buf, start = [], "", first
    for n, line in enumerate(lines, first):
        if not buf:
            start = n
        if line.rstrip().endswith("\\") and not line.lstrip().startswith("#"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        quote, depth = shell_state(buf)
        if (quote or depth > 0) and n < first + len(lines) - 1:
            buf += " "
            continue
        out.append((start, buf))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


TOOL_START = re.compile(
    r"(?:(?:\w+=\S*|nice(?: -n ?\d+)?|time|nohup|setsid)\s+)*"
    r"(?:bash\s+|(?:\S*/)?python3?\s+)?"
    r"(?:fairseq-[a-z-]+|-m\s+fairseq_kd|\.?/?(?:scripts|data_prep|bench|docs/results/tools)/\S+\.(?:sh|py)"
    r"|[\w-]+\.(?:sh|py)(?=\s|$))")


def comment_command(text: str) -> Optional[str]:
    """The command a comment line shows, if any: ``# CMD``, ``# label: CMD`` or a queue line ``# NAME -- CMD``."""
    m = re.match(r"\s*(?:\S+:\s+|.*?\s--\s+)?", text)
    for start in (len(text) - len(text.lstrip()), m.end()):
        if TOOL_START.match(text, start):
            return text[start:]
    return None


def block_commands(source: str, lines: Sequence[str], first: int) -> List[Command]:
    """Commands of one fenced code block (``lines``, the first at line ``first``)."""
    variables: Dict[str, Tuple[str, bool]] = {}
    cmds = []
    logical = logical_lines(lines, first)
    i = 0
    while i < len(logical):
        n, text = logical[i]
        i += 1
        stripped = text.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#")
            cmd = comment_command(body)
            if cmd is None:
                continue
            indent = len(body) - len(body.lstrip())
            # an unescaped continuation: the next comment lines, deeper and starting with an option
            while i < len(logical):
                nxt = logical[i][1].strip()
                nbody = nxt.lstrip("#")
                if nxt.startswith("#") and len(nbody) - len(nbody.lstrip()) > indent and \
                        re.match(r"\s*\[?--", nbody):
                    cmd += " " + nbody.strip()
                    i += 1
                else:
                    break
            cmds.append(Command(source, n, re.split(r"\s{2,}\(", cmd)[0].strip()))
            continue
        code = strip_comment(text)
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)=\((.*)\)\s*", code, flags=re.S)
        if m:
            variables[m.group(1)] = (" ".join(m.group(2).split()), True)
            continue
        for seg in split_segments(code):
            m = re.fullmatch(r"([A-Za-z_]\w*)=(\S.*)?", seg)
            if m:
                raw = m.group(2) or ""
                d = re.fullmatch(r"\$\{%s:?-(.*)\}" % m.group(1), raw)  # NAME=${NAME:-default}
                try:
                    words = [d.group(1)] if d else shlex.split(raw)
                except ValueError:
                    words = []
                if len(words) <= 1:
                    variables[m.group(1)] = (words[0] if words else "", False)
                    continue
            if TOOL_START.match(seg):
                cmds.append(Command(source, n, expand(" ".join(seg.split()), variables)))
            else:  # a command after a shell keyword: `for ...; do CMD`, `if ...; then CMD`
                words = seg.split()
                while words and words[0] in WRAPPERS:
                    words = words[1:]
                rest = " ".join(words)
                if words and TOOL_START.match(rest):
                    cmds.append(Command(source, n, expand(rest, variables)))
    return cmds


def markdown_commands(path: Path) -> List[Command]:
    """Commands of a markdown file: fenced blocks, their comments, and inline code spans."""
    source = rel(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    cmds: List[Command] = []
    prose = list(lines)
    i = 0
    while i < len(lines):
        fence = re.match(r"\s*(```|~~~)", lines[i])
        if not fence:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].lstrip().startswith(fence.group(1)):
            j += 1
        cmds += block_commands(source, lines[i + 1:j], i + 2)
        for k in range(i, min(j + 1, len(lines))):
            prose[k] = ""
        i = j + 1
    text = "\n".join(prose)
    for m in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(m.group(1).split())
        if TOOL_START.match(span):
            for seg in split_segments(strip_comment(span)):
                if TOOL_START.match(seg):
                    cmds.append(Command(source, text.count("\n", 0, m.start()) + 1, seg, fragment=True))
    return cmds


def header_commands(path: Path) -> List[Command]:
    """Usage lines of a script's header comment (the comment block under the shebang)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header = []
    for line in lines[1 if lines and lines[0].startswith("#!") else 0:]:
        if not line.startswith("#"):
            break
        header.append(line)
    first = 2 if lines and lines[0].startswith("#!") else 1
    cmds = []
    i = 0
    while i < len(header):
        body = header[i][1:]
        n = first + i
        i += 1
        cmd = comment_command(body) if re.match(r"\s{2,}", body) else None
        if cmd is None:
            continue
        indent = len(body) - len(body.lstrip())
        while cmd.rstrip().endswith("\\") and i < len(header):
            cmd = cmd.rstrip()[:-1] + " " + header[i][1:].strip()
            i += 1
        while i < len(header):  # an unescaped continuation: deeper, starting with an option
            nbody = header[i][1:]
            if len(nbody) - len(nbody.lstrip()) > indent and re.match(r"\s*\[?--", nbody):
                cmd += " " + nbody.strip()
                i += 1
            else:
                break
        cmd = re.split(r"\s{2,}\(", strip_comment(cmd))[0]
        cmds.append(Command(rel(path), n, " ".join(cmd.split())))
    return cmds


# ---------------------------------------------------------------------------------------------------------
# What each tool accepts
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Options:
    """The flags a tool accepts: name -> (number of values: int, "?", "*", "+"; choices or None; nested tool)."""
    flags: Dict[str, Tuple[object, Optional[Tuple[str, ...]], Optional[str]]]
    subcommands: Dict[str, "Options"] = field(default_factory=dict)
    end_marker: bool = True   # a bare "--" ends the options
    positionals: bool = True  # positional arguments are accepted
    passthrough: bool = False  # no options of its own: every argument goes to another program
    required: List[Tuple[str, ...]] = field(default_factory=list)  # options that must be given (option strings)


class Captured(Exception):
    def __init__(self, parser):
        super().__init__("parser captured")
        self.parser = parser


_PASS = [0]  # > 0: parse for real (inside the fairseq capture below)


def _capturing_parse_known_args(original):
    def parse_known_args(self, args=None, namespace=None):
        if _PASS[0] or not self.add_help:  # fairseq's --user-dir pre-parser: let it run
            return original(self, args, namespace)
        raise Captured(self)
    return parse_known_args


def capture_parser(run, argv: Sequence[str], fairseq_argv: Optional[Sequence[str]] = None):
    """The first argparse parser ``run()`` parses with (``sys.argv = argv``); ``fairseq_argv``: what
    ``fairseq.options.parse_args_and_arch`` completes its parser for (model, task, criterion ... options)."""
    from fairseq import options as fs_options

    original_pka = argparse.ArgumentParser.parse_known_args
    original_paa = fs_options.parse_args_and_arch

    def parse_args_and_arch(parser, input_args=None, parse_known=False, suppress_defaults=False,
                            modify_parser=None):
        _PASS[0] += 1
        try:
            original_paa(parser, list(fairseq_argv or []), parse_known=True, modify_parser=modify_parser)
        finally:
            _PASS[0] -= 1
        raise Captured(parser)

    # what a program may change before it parses: argv, sys.path, the logging setup (basicConfig(force=True))
    saved = (sys.argv, list(sys.path), logging.root.level, list(logging.root.handlers))
    argparse.ArgumentParser.parse_known_args = _capturing_parse_known_args(original_pka)
    fs_options.parse_args_and_arch = parse_args_and_arch
    sys.argv = list(argv)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                run()
            except Captured as c:
                return c.parser
            except SystemExit as e:
                if "usage:" not in err.getvalue():  # not argparse refusing: the program has no parser
                    raise NoParser() from None
                raise ValueError(err.getvalue().strip().splitlines()[-1] if err.getvalue().strip()
                                 else f"exited {e.code}") from None
    finally:
        argparse.ArgumentParser.parse_known_args = original_pka
        fs_options.parse_args_and_arch = original_paa
        sys.argv, sys.path[:], logging.root.level, logging.root.handlers[:] = saved
    raise NoParser()


class NoParser(Exception):
    """The program reads its arguments without argparse."""


def docstring_options(doc: str) -> Options:
    """Options of a program without an argparse parser: the flags its usage (module docstring) shows."""
    return Options({f: (0, None, None) for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", doc or "")})


NESTED = re.compile(r"\bextra\b.*?\b((?:fairseq|python -m)[\w.-]*)\b.*?\bflags\b|\bextra flags for ([\w.-]+)")


def nested_tool(help_text: str) -> Optional[str]:
    """The tool a pass-through option's value goes to, read off its help: "extra fairseq-train flags"."""
    m = NESTED.search(help_text or "")
    name = m and (m.group(1) or m.group(2))
    return name if name in console_tools() or name in fairseq_tools() else None


def argparse_options(parser: argparse.ArgumentParser) -> Options:
    flags = {}
    subs = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            subs = {name: argparse_options(sub) for name, sub in action.choices.items()}
            continue
        nargs = action.nargs if action.nargs is not None else 1
        if nargs == argparse.OPTIONAL:
            nargs = "?"
        choices = tuple(str(c) for c in action.choices) if action.choices is not None else None
        for opt in action.option_strings:
            flags[opt] = (nargs, choices, nested_tool(action.help if isinstance(action.help, str) else ""))
    required = [tuple(a.option_strings) for a in parser._actions if a.required and a.option_strings]
    return Options(flags, subs, required=required)


def merge(options: Sequence[Options]) -> Options:
    flags = {}
    for o in options:
        for name, spec in o.flags.items():
            if name in flags and flags[name][1] is not None and spec[1] is not None:
                spec = (spec[0], tuple(sorted(set(flags[name][1]) | set(spec[1]))), spec[2])
            flags[name] = spec
    return Options(flags)


@functools.lru_cache(maxsize=None)
def console_tools() -> Dict[str, str]:
    """Our console scripts: name -> "module:function", from setup.py's entry points."""
    text = (REPO / "setup.py").read_text(encoding="utf-8")
    return dict(re.findall(r'"([\w-]+)\s*=\s*([\w.]+:\w+)"', text))


@functools.lru_cache(maxsize=None)
def fairseq_tools() -> Dict[str, str]:
    """fairseq's console scripts (fairseq-train ...): name -> "module:function" of fairseq_cli."""
    return {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")
            if e.value.startswith("fairseq_cli.")}


def entry_point(spec: str):
    module, func = spec.split(":")
    return getattr(importlib.import_module(module), func)


@functools.lru_cache(maxsize=None)
def python_options(kind: str, target: str) -> Options:
    """Options of a console script, ``python -m MODULE`` or ``python SCRIPT.py``."""
    import fairseq_kd  # noqa: F401  (registers our plugins, as the tools do)

    try:
        if kind == "console":
            parser = capture_parser(entry_point(console_tools()[target]), [target])
        elif kind == "module":
            parser = capture_parser(lambda: runpy.run_module(target, run_name="__main__", alter_sys=True),
                                    ["python -m " + target])
        else:
            path = str(REPO / target)

            def run():
                sys.path.insert(0, str(Path(path).parent))  # as `python SCRIPT` has it (restored after)
                runpy.run_path(path, run_name="__main__")
            parser = capture_parser(run, [path])
    except NoParser:
        if kind == "console":
            doc = importlib.import_module(console_tools()[target].split(":")[0]).__doc__
        elif kind == "module":
            doc = importlib.import_module(target).__doc__
        else:
            doc = ast.get_docstring(ast.parse((REPO / target).read_text(encoding="utf-8")))
        return docstring_options(doc)
    return argparse_options(parser)


SELECTORS = ("--user-dir", "--task", "--arch", "-a")


@functools.lru_cache(maxsize=None)
def fairseq_selectors() -> Tuple[str, ...]:
    from fairseq.registry import REGISTRIES

    return SELECTORS + tuple("--" + name.replace("_", "-") for name in REGISTRIES)


@functools.lru_cache(maxsize=None)
def fairseq_parser_options(tool: str, selection: Tuple[Tuple[str, str], ...]) -> Options:
    """Options of fairseq tool ``tool`` with these selectors (``--task kd_translation``, ``--arch ...``)."""
    import fairseq_kd  # noqa: F401

    argv = ["DATA"]
    for flag, value in selection:
        argv += [flag, helpers.USER_DIR if flag == "--user-dir" else value]
    return argparse_options(capture_parser(entry_point(fairseq_tools()[tool]), [tool, *argv], argv))


@functools.lru_cache(maxsize=None)
def kd_choices() -> Dict[str, List[str]]:
    """For a fragment that names no --task / --arch / --criterion ...: the choices it may imply, fairseq's
    own default and every one this repo registers (one architecture per model class)."""
    import fairseq_kd  # noqa: F401
    from fairseq.models import ARCH_MODEL_REGISTRY
    from fairseq.registry import REGISTRIES
    from fairseq.tasks import TASK_REGISTRY

    ours = lambda cls: cls.__module__.startswith("fairseq_kd")  # noqa: E731
    per_class = {}
    for name, cls in ARCH_MODEL_REGISTRY.items():
        if ours(cls):
            per_class.setdefault(cls, name)
    out = {"--task": ["translation"] + [n for n, c in TASK_REGISTRY.items() if ours(c)],
           "--arch": ["transformer"] + sorted(per_class.values())}
    for name, reg in REGISTRIES.items():
        ours_here = [n for n, c in reg["registry"].items() if ours(c)]
        if ours_here:
            out["--" + name.replace("_", "-")] = ([reg["default"]] if reg["default"] else []) + ours_here
    return out


def fairseq_options(tool: str, words: Sequence[str], fragment: bool, context: Dict[str, str]) -> Options:
    """Options of ``tool`` for this command: its selectors as given; a fragment's missing ones may be any
    of fairseq's defaults or ours (the union of those parsers' options)."""
    given = dict(context)
    for k, w in enumerate(words[:-1]):
        if w in fairseq_selectors() and not placeholder(words[k + 1]):
            given["--arch" if w == "-a" else w] = words[k + 1]
        elif "=" in w and w.split("=", 1)[0] in fairseq_selectors():
            given[w.split("=", 1)[0]] = w.split("=", 1)[1]
    if fragment:
        given.setdefault("--user-dir", "fairseq_kd")
    if not fragment:
        return fairseq_parser_options(tool, tuple(sorted(given.items())))
    missing = {flag: choices for flag, choices in kd_choices().items() if flag not in given}
    fill = {**given, **{flag: choices[-1] for flag, choices in missing.items()}}  # one of ours each
    variants = [tuple(sorted(fill.items()))]
    for flag, choices in missing.items():
        variants += [tuple(sorted({**fill, flag: c}.items())) for c in choices]
    found = []
    for v in variants:
        try:
            found.append(fairseq_parser_options(tool, v))
        except (ValueError, RuntimeError):
            pass  # a selector this tool does not have (fairseq-generate has no --arch choice to make)
    return merge(found)


# ---- shell scripts ----

def _functions(text: str) -> Dict[str, str]:
    out = {m.group(1): m.group(2) for m in re.finditer(r"(?ms)^(\w+)\(\)\s*\{\n(.*?)^\}", text)}
    out.update({m.group(1): m.group(2) for m in re.finditer(r"(?m)^(\w+)\(\)\s*\{(.*)\}\s*$", text)})
    return out


def _sourced(path: Path, text: str) -> List[Path]:
    out = []
    for line in text.splitlines():
        m = re.match(r"(?:\.|source)\s+(.*)", line)
        if not m:
            continue
        tail = re.search(r"[)}]?(/?[\w./-]+\.sh)\"?", m.group(1).split("#")[0])
        if tail:
            for base in (path.parent, REPO):
                cand = (base / tail.group(1).lstrip("/")).resolve()
                if cand.is_file():
                    out.append(cand)
                    break
    return out


def _comment(line: str) -> str:
    quote_free = re.sub(r"\"[^\"]*\"|'[^']*'", "", line)
    return quote_free.split("#", 1)[1] if "#" in quote_free else ""


def _bash_choices(texts: Sequence[str]) -> Dict[str, Tuple[str, ...]]:
    """Values a script accepts for a variable: a ``case "${name}" in a|b) ... ;; *) usage_error ...`` check
    (every arm a literal word, the fallback an error); several checks of one variable: what all accept."""
    out: Dict[str, Set[str]] = {}
    for t in texts:
        for m in re.finditer(r'case "\$\{(\w+)(?::-[^}]*)?\}" in\b(.*?)\besac\b', t, flags=re.S):
            literal, refuses = set(), False
            for arm in m.group(2).split(";;"):
                a = re.match(r"\s*([^)\s]+)\)(.*)", arm, flags=re.S)
                if not a:
                    continue
                if a.group(1) == "*":
                    refuses = bool(re.search(r"\b(usage_error|die|exit)\b", a.group(2)))
                elif re.fullmatch(r"[\w.-]+(?:\|[\w.-]+)*", a.group(1)):
                    literal.update(a.group(1).split("|"))
                else:
                    literal = set()
                    break
            if refuses and literal:
                out[m.group(1)] = out[m.group(1)] & literal if m.group(1) in out else literal
    return {name: tuple(sorted(values)) for name, values in out.items()}


@functools.lru_cache(maxsize=None)
def bash_options(path: Path) -> Options:
    """Flags of a shell script: see the module docstring."""
    text = path.read_text(encoding="utf-8")
    files = [path]
    for f in files:  # the script and everything it sources, transitively
        files += [s for s in _sourced(f, f.read_text(encoding="utf-8")) if s not in files]
    texts = [f.read_text(encoding="utf-8") for f in files]
    functions = {}
    for t in texts:
        functions.update(_functions(t))
    parsers = {"parse_flags"} if "parse_flags" in functions else set()
    changed = True
    while changed:
        changed = False
        for name, body in functions.items():
            if name not in parsers and any(re.search(r"(?m)^\s*%s\b" % p, body) for p in parsers):
                parsers.add(name)
                changed = True
    # flags named in `case` patterns: `--out) out="$2"; shift 2 ;;` takes a value, `--fp16|--amp) ...` does not
    cased: Dict[str, int] = {}
    for t in texts:
        for line in t.splitlines():
            if line.lstrip().startswith("#"):
                continue
            for m in re.finditer(r"(?:^\s*|\bin\s+)((?:-\w|--[a-z][\w-]*)(?:\|(?:-\w|--[a-z][\w-]*))*)\)(.*)", line):
                takes_value = bool(re.search(r'"\$2"|shift 2', m.group(2).split(";;")[0]))
                cased.update({name: int(takes_value) for name in m.group(1).split("|")})
    flags: Dict[str, Tuple[object, Optional[Tuple[str, ...]], Optional[str]]] = {}

    def declare(name: str, line: str) -> None:
        if not name.startswith("_"):
            flags["--" + name.replace("_", "-")] = (1, None, nested_tool(_comment(line)))

    def walk(f: Path, stop: bool) -> bool:
        """Top-level declarations of ``f`` (and what it sources) until the option parser runs."""
        for line in f.read_text(encoding="utf-8").splitlines():
            m = re.match(r"(?:declare(?: -\w+)* )?([A-Za-z_]\w*)=", line)
            if m:
                declare(m.group(1), line)
            elif re.match(r"(?:\.|source)\s", line):
                for s in _sourced(f, line):
                    if walk(s, False):
                        return True
            elif stop and re.match(r"(%s)\b" % "|".join(map(re.escape, parsers)), line):
                return True
        return False

    case_list = re.search(r'case "\$\{name\}" in\s*(.*?)\)\s*printf -v "\$\{name\}"', text, flags=re.S)
    if parsers:
        walk(path, True)
    elif case_list:
        for name in re.split(r"[|\\\s]+", case_list.group(1)):
            if name:
                declare(name, "")
    elif not cased:  # no option parser: positional arguments only, or all passed on ("$@") to another program
        return Options({}, positionals=True, end_marker=True, passthrough='"$@"' in text)
    for name, takes_value in cased.items():
        flags[name] = (takes_value, None, None)
    for name, choices in _bash_choices(texts).items():
        flag = "--" + name.replace("_", "-")
        if flag in flags:
            flags[flag] = (flags[flag][0], choices, flags[flag][2])
    end_marker = bool(re.search(r'==\s*"--"', "\n".join(texts)))
    return Options(flags, end_marker=end_marker, positionals=False)


# ---------------------------------------------------------------------------------------------------------
# Checking a command
# ---------------------------------------------------------------------------------------------------------

def placeholder(word: str) -> bool:
    """A word the user replaces: $VAR, ..., <thing>, ALL_CAPS (CKPT, DIR/bin is not: only a whole word)."""
    return ("$" in word or "..." in word or "<" in word or "*" in word
            or bool(re.fullmatch(r"[A-Z][A-Z0-9_]*", word)))


def is_flag(word: str) -> bool:
    return word.startswith("-") and len(word) > 1 and not re.match(r"-[\d.]", word)


def words_of(cmd: Command) -> Optional[List[str]]:
    try:
        words = shlex.split(cmd.text)
    except ValueError:
        return None
    out, skip = [], False
    for w in words:
        if skip:
            skip = False
            continue
        if re.fullmatch(r"\d?(?:>>?|<)|&>", w):  # a redirection and its file
            skip = True
            continue
        if re.match(r"\d?(?:>>?|<)|&>", w):
            continue
        w = w.strip("[]") if w not in ("[", "]") else ""
        if w:
            out.append(w)
    return out


def identify(words: List[str]) -> Tuple[Optional[Tuple[str, str]], List[str]]:
    """(tool kind, tool name) and the arguments after it; (None, []) when it is not one of ours."""
    while words and (re.fullmatch(r"[A-Za-z_]\w*=.*", words[0]) or words[0] in WRAPPERS or words[0] == "nice"):
        if words[0] == "nice" and len(words) > 2 and words[1] == "-n":
            words = words[3:]
        else:
            words = words[1:]
    if not words:
        return None, []
    head, rest = words[0], words[1:]
    if re.fullmatch(r"(?:\S*/)?python3?", head):
        if rest[:1] == ["-m"] and len(rest) > 1:
            return (("module", rest[1]) if rest[1].startswith("fairseq_kd") else None), rest[2:]
        if rest and rest[0].endswith(".py"):
            return ("script", rest[0]), rest[1:]
        return None, []
    if head == "bash":
        head, rest = (rest[0], rest[1:]) if rest else ("", [])
    if head.endswith(".sh"):
        return ("bash", head), rest
    if head.endswith(".py"):  # a script named without its interpreter (inline mentions)
        return ("script", head), rest
    if head in console_tools():
        return ("console", head), rest
    if head in fairseq_tools():
        return ("fairseq", head), rest
    return None, []


def check_command(cmd: Command) -> List[str]:
    """Problems of one command: unknown flags, illegal choices, missing scripts."""
    words = words_of(cmd)
    if words is None:
        return [f"{cmd.where()}: not a valid shell command (unbalanced quotes)"]
    tool, args = identify(words)
    if tool is None:
        return []
    kind, name = tool
    if kind in ("bash", "script"):
        if any(placeholder(Path(part).stem) for part in name.split("/")):
            return []
        if name.startswith("/"):
            return []  # a copy elsewhere (a frozen snapshot of the repository), not this checkout's
        path = REPO / (name[2:] if name.startswith("./") else name)
        if "/" not in name:  # a bare name in prose (`run_lanes.sh --status 1`): the one script of that name
            found = [p for d in sorted(repo_dirs() - {"tests"}) for p in (REPO / d).rglob(name)]
            if len(found) != 1:
                return []  # not one of our scripts (setup.py, a test file), or ambiguous
            path = found[0]
        if not path.is_file():
            return [f"{cmd.where()}: {name}: no such file in the repository"]
        name = rel(path.resolve())
    label = name if kind != "module" else f"python -m {name}"
    try:
        if kind == "bash":
            opts = bash_options(REPO / name)
        elif kind == "fairseq":
            user_dir = [args[k + 1] for k, a in enumerate(args[:-1]) if a == "--user-dir"]
            if user_dir and not placeholder(user_dir[0]) and not (REPO / user_dir[0]).is_dir():
                return [f"{cmd.where()}: {label} --user-dir {user_dir[0]}: no such folder in the repository"]
            if "..." in args or any(placeholder(a) for a in args if a.startswith("--arch")):
                cmd.fragment = True
            opts = fairseq_options(name, args, cmd.fragment, cmd.context)
        else:
            opts = python_options(kind, name)
    except RuntimeError:  # fairseq's parse_args_and_arch: no model to add the options of
        return [f"{cmd.where()}: {label} names no --arch (fairseq cannot build its model options)"]
    except ValueError as e:
        return [f"{cmd.where()}: {label} rejects its selectors: {e}"]
    return check_args(cmd, label, opts, args)


def check_args(cmd: Command, label: str, opts: Options, args: List[str]) -> List[str]:
    problems = []
    if opts.subcommands:
        positional = [a for a in args if not is_flag(a)]
        sub = positional[0] if positional else None
        if sub is not None and not placeholder(sub):
            if sub not in opts.subcommands:
                return [f"{cmd.where()}: {label} has no command {sub!r} (it has: {', '.join(opts.subcommands)})"]
            opts = Options({**opts.flags, **opts.subcommands[sub].flags},
                           required=opts.required + opts.subcommands[sub].required)
            args = [a for a in args if a != sub]
        else:
            opts = merge([opts] + list(opts.subcommands.values()))
    if opts.passthrough:
        return []
    complete = not cmd.fragment and not any("..." in a or a.startswith("$") for a in args)
    for names in opts.required if complete else []:
        if not any(a in names or a.split("=", 1)[0] in names for a in args):
            problems.append(f"{cmd.where()}: {label} needs {names[-1] if names[-1].startswith('--') else names[0]}")
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "--":
            if not opts.end_marker:
                problems.append(f"{cmd.where()}: {label} does not take a bare '--'")
            break
        if not is_flag(word) or placeholder(word):
            if not opts.positionals and word not in ("...",) and not placeholder(word):
                problems.append(f"{cmd.where()}: {label} takes no positional argument ({word!r})")
            elif missing_path(word):
                problems.append(f"{cmd.where()}: {word}: no such path in the repository")
            continue
        flag, _, inline = word.partition("=")
        if flag not in opts.flags:
            problems.append(f"{cmd.where()}: {label} has no flag {flag}")
            if not inline and i < len(args) and not is_flag(args[i]):
                i += 1  # its value, if it has one
            continue
        nargs, choices, nested = opts.flags[flag]
        values: List[str] = [inline] if inline else []
        if not inline:
            if isinstance(nargs, int):
                values, i = args[i:i + nargs], i + nargs
            elif nargs == "?":
                if i < len(args) and not is_flag(args[i]):
                    values, i = [args[i]], i + 1
            else:
                while i < len(args) and not is_flag(args[i]) and args[i] != "...":
                    values.append(args[i])
                    i += 1
        for v in values:
            if missing_path(v):
                problems.append(f"{cmd.where()}: {label} {flag} {v}: no such path in the repository")
            alternatives = v.split("|")
            if choices is not None and not any(placeholder(a) for a in alternatives):
                bad = [a for a in alternatives if a not in choices]
                if bad:
                    problems.append(f"{cmd.where()}: {label} {flag}: {bad[0]!r} is not one of {', '.join(choices)}")
            if nested:
                value = re.sub(r"^[\w.]+=(?=-)", "", v)  # --method-args NAME=--flags
                if re.search(r"(?:^|\s)--?[a-z]", value):
                    problems += check_command(Command(cmd.source, cmd.line, f"{nested} {value}", fragment=True,
                                                      context=nested_context(nested), via=f"{label} {flag}"))
    return problems


@functools.lru_cache(maxsize=None)
def repo_dirs() -> Set[str]:
    """The repository's own top-level folders (tracked by git; exp/, .venv/ ... are not)."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".") and p.name != "exp"}
    return {f.split("/", 1)[0] for f in files.splitlines() if "/" in f}


def missing_path(word: str) -> bool:
    """A path into the repository's own folders that is not there (an output file's folder counts)."""
    if placeholder(word) or re.search(r"[{}?]", word) or "/" not in word:
        return False
    path = word[2:] if word.startswith("./") else word
    if path.split("/", 1)[0] not in repo_dirs():
        return False
    return not (REPO / path).exists() and not (REPO / path).parent.is_dir()


def nested_context(nested: str) -> Dict[str, str]:
    """A nested fairseq fragment inherits the outer command's --user-dir (our tools pass ours)."""
    return {"--user-dir": "fairseq_kd"} if nested in fairseq_tools() else {}


def problems_of(cmds: Sequence[Command]) -> List[str]:
    out = []
    for cmd in cmds:
        out += check_command(cmd)
    return out


# ---------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("doc", DOCS, ids=rel)
def test_doc_commands_use_real_flags(doc):
    problems = problems_of(markdown_commands(doc))
    assert not problems, "commands in the docs that would not run as written:\n" + "\n".join(problems)


@pytest.mark.parametrize("script", SCRIPTS, ids=rel)
def test_script_header_commands_use_real_flags(script):
    problems = problems_of(header_commands(script))
    assert not problems, "usage lines that would not run as written:\n" + "\n".join(problems)


BOGUS = "--no-such-flag-in-any-tool"


def _doc_with(command: str) -> List[str]:
    cmds = block_commands("doc.md", [command], 1)
    assert cmds, f"not read as a command: {command}"
    return problems_of(cmds)


@pytest.mark.parametrize("command", [
    "fairseq-kd-report exp/study/results.csv --baseline word",
    "python -m fairseq_kd.prep spm-train --input a b --model-prefix m --vocab-size 8",
    "python docs/results/tools/curve_diff.py a.csv b.csv --names A B",
    "bash scripts/decode.sh --data-bin exp/m30k/bin --checkpoint c.pt --out hyp.en --decoding greedy",
    "bash scripts/train_student.sh --kd seq --data-bin d --exp-dir e --fp16 --extra '--max-update 10'",
    "fairseq-train DATA --user-dir fairseq_kd --task kd_translation --criterion word_kd --kd-alpha 0.5 "
    "--arch transformer_relu_3m --share-all-embeddings",
    "fairseq-kd-study --data d -s de -t en --test-ref r --out-dir o --train-args '--dropout 0.3'",
    "fairseq-kd-study --data d -s de -t en --test-ref r --out-dir o --methods word --method-args 'word=--kd-alpha 0.7'",
])
def test_a_bogus_flag_fails_and_the_real_command_passes(command):
    """The checker's own contract, for each kind of tool: the command as written passes, and the same command
    with a flag its tool does not have fails naming that flag (also inside a pass-through value)."""
    assert _doc_with(command) == []
    problems = _doc_with(command + " " + BOGUS + (" 1" if "bash " in command else ""))
    assert len(problems) == 1 and BOGUS in problems[0], problems
    if re.search(r"'(\w+=)?--", command):  # the nested tool's flags are checked too
        nested = re.sub(r"'(\w+=)?--", lambda m: f"'{m.group(1) or ''}{BOGUS} 1 --", command, count=1)
        problems = _doc_with(nested)
        assert len(problems) == 1 and BOGUS in problems[0], problems


def test_an_illegal_choice_a_missing_option_and_a_missing_script_fail():
    assert "'nearest' is not one of" in " ".join(
        _doc_with("fairseq-kd-study --data d -s de -t en --test-ref r --out-dir o --decodings nearest"))
    assert "'nearest' is not one of" in " ".join(
        _doc_with("bash scripts/decode.sh --data-bin d --checkpoint c --out o --decoding nearest"))
    assert "'nearest' is not one of" in " ".join(
        _doc_with("fairseq-train DATA --user-dir fairseq_kd --task kd_translation --criterion word_kd "
                  "--kd-divergence nearest --arch transformer"))
    assert "needs --source-lang" in " ".join(_doc_with("fairseq-kd-study --data d -t en --test-ref r --out-dir o"))
    assert _doc_with("fairseq-kd-study ... --data d") == []  # an elided command: only its flags are checked
    assert "no such file" in " ".join(_doc_with("bash scripts/no_such_script.sh --x 1"))
    assert "rejects its selectors" in " ".join(
        _doc_with("fairseq-train DATA --user-dir fairseq_kd --arch no_such_arch"))
    assert "no such folder" in " ".join(_doc_with("fairseq-train DATA --user-dir fairseq_kdd --arch transformer"))
    assert "no such path" in " ".join(_doc_with("fairseq-kd-report docs/results/no_such_study/results.csv"))


def test_commands_are_read_as_a_shell_would(tmp_path):
    """Continuations, the block's own variables and arrays, commands in comments, inline spans, script headers."""
    doc = tmp_path / "doc.md"
    doc.write_text("""Run `fairseq-kd-report R.csv
--baseline word` first.

```bash
common=(--data d -s de
  -t en)
P=exp/x
OMP_NUM_THREADS=1 fairseq-kd-study "${common[@]}" --out-dir $P \\
    --train-args "--dropout 0.1" && fairseq-kd-report $P/results.csv   # a comment
# label: bash scripts/decode.sh --data-bin B --checkpoint C
#          --out O   (prose after two spaces)
for s in 1 2; do fairseq-kd-status $P; done
```
""", encoding="utf-8")
    texts = [(c.line, c.text, c.fragment) for c in markdown_commands(doc)]
    assert texts == [
        (8, 'OMP_NUM_THREADS=1 fairseq-kd-study --data d -s de -t en --out-dir exp/x --train-args "--dropout 0.1"',
         False),
        (8, "fairseq-kd-report exp/x/results.csv", False),
        (10, "bash scripts/decode.sh --data-bin B --checkpoint C --out O", False),
        (12, "fairseq-kd-status exp/x", False),
        (1, "fairseq-kd-report R.csv --baseline word", True)]
    script = tmp_path / "tool.sh"
    script.write_text("#!/usr/bin/env bash\n# A tool.\n#\n#   bash scripts/decode.sh --data-bin B \\\n"
                      "#       --checkpoint C\n#       [--beam 5]\n# prose: scripts/decode.sh --nothing here\nset -e\n",
                      encoding="utf-8")
    assert [(c.line, c.text) for c in header_commands(script)] == [
        (4, "bash scripts/decode.sh --data-bin B --checkpoint C [--beam 5]")]
