#!/usr/bin/env python3
"""Compiles every ```cpp block of README.md and docs/*.md, so the text cannot
drift from the code.

Convention (docs/writing-docs.md says the same for writers):

  * A ```cpp block (also ```c++, ```cxx) is a whole translation unit: it must
    compile on its own against include/, as C++17, with the project's warning
    flags (warnings are errors). A block that defines `int main` is also
    linked and run, and must exit with status 0.
  * An HTML comment on the line right before the opening fence (invisible
    when the Markdown is rendered) changes that:
      <!-- snippet: body -->
          The block is statements. It is compiled as the body of a function,
          after `#include <tollgate/tollgate.hpp>` and
          `using namespace tollgate;`.
      <!-- snippet: body
           std::string_view prompt = "...";
      -->
          The same; the comment's further lines come first in the function:
          the setup a reader does not need to see (the variables the
          fragment uses).
      <!-- snippet: skip: REASON -->
          Not compiled; the reason is required (for a block that shows what
          does not compile, say).
      <!-- snippet: output -->
          On a block in another language (```text): what the previous ```cpp
          block of the file prints when run. That block must have a main; its
          standard output must equal this block's text.
  * Blocks in other languages (sh, cmake, meson, ini, text, none) are not
    compiled.

It also checks that every relative link of those files ([text](path),
![alt](path), path#heading) names a file that exists, and a heading of it
when it has an anchor, so moving a page, a section or a plot cannot leave a
dead link.

Errors name the Markdown file and line: each generated source carries #line
directives pointing back into the Markdown, so the compiler's own messages do
too. Exit status: 0 when every block compiles (and runs), 1 otherwise.

  check_snippets.py --root DIR --out DIR --cxx COMPILER [--jobs N]
                    [--file F.md ...] [-- FLAGS...]

Without --file it reads README.md and docs/*.md under --root. FLAGS (after
`--`) go to every compile, e.g. -std=c++17 -Wall ... -Werror.
"""
import argparse
import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys

COMPILED = {"cpp", "c++", "cxx"}
MARKER = re.compile(r"^<!--\s*snippet:\s*(.*)$")
FENCE = re.compile(r"^(\s*)(`{3,})\s*([^`\s]*)")
MAIN = re.compile(r"\bint\s+main\s*\(")
LINK = re.compile(r"\]\(([^)\s]+)\)")


class Block:
    def __init__(self, path, rel, line, lang, code, mode, setup, setup_line):
        self.path = path          # the Markdown file
        self.rel = rel            # its name as reported (relative to the root)
        self.line = line          # line of the opening fence (1-based)
        self.lang = lang
        self.code = code          # the block's lines, fence indentation removed
        self.mode = mode          # "tu", "body" or "skip"
        self.setup = setup        # lines from the marker (body mode)
        self.setup_line = setup_line
        self.output = None        # the expected standard output, if any
        self.output_line = 0


def parse(path, rel):
    """Returns (blocks, errors) for one Markdown file."""
    lines = path.read_text(encoding="utf-8").split("\n")
    blocks, errors = [], []
    pending = None  # (mode, setup lines, setup first line, marker line)
    i = 0
    while i < len(lines):
        text = lines[i]
        m = MARKER.match(text.strip())
        if m:
            start = i
            body = [m.group(1)]
            while "-->" not in body[-1]:
                i += 1
                if i == len(lines):
                    errors.append(f"{rel}:{start + 1}: snippet marker is not closed with -->")
                    return blocks, errors
                body.append(lines[i])
            body[-1] = body[-1][: body[-1].index("-->")]
            head = body[0].strip()
            setup = [b for b in body[1:]]
            if head == "body":
                pending = ("body", setup, start + 2, start + 1)
            elif head == "output":
                pending = ("output", [], 0, start + 1)
            elif head.startswith("skip:") and head[len("skip:"):].strip():
                pending = ("skip", [], 0, start + 1)
            else:
                errors.append(f"{rel}:{start + 1}: unknown snippet marker '{head}' "
                              "(use 'body', 'output' or 'skip: REASON')")
            i += 1
            if pending and not (i < len(lines) and FENCE.match(lines[i])):
                errors.append(f"{rel}:{start + 1}: snippet marker not followed by a code block")
                pending = None
            continue
        f = FENCE.match(text)
        if f:
            indent, ticks, lang = f.group(1), f.group(2), f.group(3).lower()
            open_line = i + 1
            code = []
            i += 1
            closed = False
            while i < len(lines):
                c = lines[i]
                if c.strip().startswith(ticks) and c.strip().strip("`") == "":
                    closed = True
                    break
                code.append(c[len(indent):] if c.startswith(indent) else c.lstrip())
                i += 1
            if not closed:
                errors.append(f"{rel}:{open_line}: code block is not closed")
                return blocks, errors
            mode, setup, setup_line = "tu", [], 0
            if pending:
                mode, setup, setup_line, marker_line = pending
                pending = None
                if mode == "output":
                    if lang in COMPILED or not blocks or blocks[-1].output is not None:
                        errors.append(f"{rel}:{marker_line}: an output marker belongs on a non-C++ block "
                                      "after the ```cpp block that prints it")
                    else:
                        blocks[-1].output = "\n".join(code)
                        blocks[-1].output_line = open_line
                    i += 1
                    continue
                if lang not in COMPILED:
                    errors.append(f"{rel}:{marker_line}: snippet marker on a '{lang or 'plain'}' block")
            if lang in COMPILED:
                blocks.append(Block(path, rel, open_line, lang, code, mode, setup, setup_line))
        i += 1
    return blocks, errors


def dead_links(path, rel):
    """Relative links of one Markdown file (outside code) that name no file."""
    errors, fence = [], None  # fence: the backticks of the open code block
    for n, text in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        f = FENCE.match(text)
        if f and fence is None:
            fence = f.group(2)
            continue
        if fence is not None:
            if text.strip().startswith(fence) and text.strip().strip("`") == "":
                fence = None
            continue
        for target in LINK.findall(re.sub(r"`+[^`]*`+", "", text)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # a URL
            file, _, anchor = target.partition("#")
            dest = path.parent / file if file else path
            if not dest.exists():
                errors.append(f"{rel}:{n}: link to {target}, which does not exist")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                errors.append(f"{rel}:{n}: link to {target}: {file or rel} has no heading '#{anchor}'")
    return errors


def anchors(path):
    """The anchors a Markdown renderer gives the file's headings (GitHub's rule)."""
    out, fence = set(), None
    for text in path.read_text(encoding="utf-8").split("\n"):
        f = FENCE.match(text)
        if f and fence is None:
            fence = f.group(2)
        elif fence is not None:
            if text.strip().startswith(fence) and text.strip().strip("`") == "":
                fence = None
        elif text.startswith("#"):
            title = text.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def source_for(b):
    # #line N names the line that follows it.
    if b.mode == "tu":
        return f'#line {b.line + 1} "{b.rel}"\n' + "\n".join(b.code) + "\n"
    out = ["#include <tollgate/tollgate.hpp>", "using namespace tollgate;", "void tollgate_snippet();",
           "void tollgate_snippet() {"]
    if b.setup:
        out.append(f'#line {b.setup_line} "{b.rel}"')
        out.extend(b.setup)
    out.append(f'#line {b.line + 1} "{b.rel}"')
    out.extend(b.code)
    out.append("}")
    return "\n".join(out) + "\n"


def check(b, args, flags):
    """Returns None when the block is fine, else a report."""
    stem = re.sub(r"[^A-Za-z0-9]+", "_", b.rel) + f"_{b.line}"
    src = args.out / f"{stem}.cpp"
    src.write_text(source_for(b), encoding="utf-8")
    runs = b.mode == "tu" and MAIN.search("\n".join(b.code)) is not None
    if b.output is not None and not runs:
        return f"{b.rel}:{b.output_line}: output block follows a ```cpp block without a main"
    inc = ["-I", str(args.root / "include")]
    where = f"{b.rel}:{b.line}"
    if runs:
        exe = args.out / stem
        cmd = [args.cxx, *flags, *inc, str(src), "-o", str(exe), "-pthread"]
    else:
        cmd = [args.cxx, *flags, *inc, "-fsyntax-only", str(src)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return (f"{where}: ```{b.lang} block ({b.mode}) does not compile:\n"
                f"  {' '.join(cmd)}\n{p.stdout}{p.stderr}")
    if runs:
        try:
            r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return f"{where}: ```{b.lang} block compiled, but did not finish within {args.timeout} s"
        if r.returncode != 0:
            return (f"{where}: ```{b.lang} block compiled, but its program exited with status "
                    f"{r.returncode}:\n{r.stdout}{r.stderr}")
        if b.output is not None and r.stdout.rstrip("\n") != b.output.rstrip("\n"):
            return (f"{b.rel}:{b.output_line}: the program of the block at line {b.line} prints otherwise:\n"
                    f"--- it prints\n{r.stdout}--- the text says\n{b.output}\n")
    return None


def main():
    argv = sys.argv[1:]
    flags = []
    if "--" in argv:
        k = argv.index("--")
        argv, flags = argv[:k], argv[k + 1:]
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    ap.add_argument("--cxx", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=30)
    ap.add_argument("--file", type=pathlib.Path, action="append", default=[])
    args = ap.parse_args(argv)
    args.root = args.root.resolve()
    args.out.mkdir(parents=True, exist_ok=True)

    files = [f.resolve() for f in args.file] or \
        [args.root / "README.md", *sorted((args.root / "docs").glob("*.md"))]
    blocks, errors = [], []
    for f in files:
        if not f.is_file():
            errors.append(f"{f}: no such file")
            continue
        try:
            rel = f.relative_to(args.root).as_posix()
        except ValueError:
            rel = f.name
        bs, es = parse(f, rel)
        blocks += bs
        errors += es + dead_links(f, rel)
    todo = [b for b in blocks if b.mode != "skip"]
    if not todo and not errors:
        errors.append("no ```cpp block found: nothing was checked")
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for report in pool.map(lambda b: check(b, args, flags), todo):
            if report:
                errors.append(report)
    skipped = len(blocks) - len(todo)
    print(f"check_snippets: {len(todo)} blocks compiled from {len(files)} files"
          f" ({sum(1 for b in todo if b.mode == 'body')} as function bodies,"
          f" {skipped} skipped by marker)")
    for e in errors:
        print(e, file=sys.stderr)
    if errors:
        print(f"check_snippets: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
