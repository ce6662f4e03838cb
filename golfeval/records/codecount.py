"""Code bytes of a record, recounted from its files rather than taken from its logs.

A record ships `train_gpt.py` plus any `.py` file of its own folder that the script imports or
execs. We count: the raw bytes of those files (what `len(code.encode())` of the shipped files
gives), the payload when the script is a self-extracting wrapper (`exec(<codec>.decompress(
<base>.b85decode(b"...")))`, or `bytes("...", "l1")` of a latin-1 literal: the shipped size
is the wrapper; the payload is decoded from the literal by golfpack.wrapped, never executed),
and two compressed sizes of the code: golfpack's own minified self-extracting wrapper, and
the recipe the April records log as `Code size (compressed)` (python-minifier without local
renaming or literal hoisting, lzma at its default preset, base85, a two-line wrapper).
Reading a script never runs it.
"""

from __future__ import annotations

import ast
import base64
import lzma
import os
from dataclasses import dataclass, field
from pathlib import Path

from golfpack.wrapped import WrapperError, unwrap

SCRIPT_NAMES = ("train_gpt.py",)
_LOG_RECIPE_WRAPPER = (b'import lzma as L,base64 as B\nexec(L.decompress(B.b85decode("', b'")))\n')


@dataclass
class CodeFile:
    path: str  # relative to the record folder (or as given)
    raw_bytes: int
    role: str  # script | import | exec
    newline_bytes: int = 0  # bytes a text-mode read drops (CR of CRLF / lone CR)


@dataclass
class CodeCount:
    """What the folder's code weighs, counted several ways."""

    script: str | None
    files: list = field(default_factory=list)
    wrapper: dict | None = None  # {"codec", "payload_bytes"} when the script self-extracts
    minified_bytes: int | None = None  # golfpack's minify + lzma/brotli + latin-1 wrapper
    minified_method: str | None = None
    recipe_bytes: int | None = None  # the logs' `Code size (compressed)` recipe
    problems: list = field(default_factory=list)

    @property
    def raw_bytes(self) -> int:
        return sum(f.raw_bytes for f in self.files)

    @property
    def script_bytes(self) -> int | None:
        return self.files[0].raw_bytes if self.files else None

    def to_dict(self) -> dict:
        return {"script": self.script, "raw_bytes": self.raw_bytes if self.files else None,
                "script_bytes": self.script_bytes,
                "files": [vars(f) for f in self.files], "wrapper": self.wrapper,
                "minified_bytes": self.minified_bytes, "minified_method": self.minified_method,
                "recipe_bytes": self.recipe_bytes, "problems": list(self.problems)}


def find_script(folder) -> Path | None:
    """The record's training script: train_gpt.py, else the only train_gpt*.py."""
    folder = Path(folder)
    for name in SCRIPT_NAMES:
        if (folder / name).is_file():
            return folder / name
    cands = sorted(p for p in folder.glob("train_gpt*.py") if p.is_file())
    return cands[0] if len(cands) == 1 else None


def _module_file(folder: Path, dotted: str) -> Path | None:
    parts = dotted.split(".")
    base = folder.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def local_dependencies(source: bytes, folder: Path, root=None) -> list[tuple[Path, str]]:
    """Folder-local .py files a script imports (`import x`, `from x import y`) or execs
    (`exec(open("x.py").read())`, `runpy.run_path("x.py")`), found by reading its syntax.
    A file that resolves outside `root` (default `folder`: a `../x.py` literal, a link) is
    never read: it comes back with the role "outside"."""
    root = Path(root or folder).resolve()

    def found(p: Path, role: str) -> tuple[Path, str]:
        return p, role if p.resolve().is_relative_to(root) else "outside"

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    out: list[tuple[Path, str]] = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call):
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and \
                        arg.value.endswith(".py"):
                    p = folder / arg.value
                    if p.is_file():
                        out.append(found(p, "exec"))
        for n in names:
            p = _module_file(folder, n)
            if p is not None:
                out.append(found(p, "import"))
    return out


def log_recipe_bytes(source: bytes) -> int | None:
    """Size of the wrapper the April records log as `Code size (compressed)`."""
    try:
        import python_minifier
    except ImportError:
        return None
    try:
        small = python_minifier.minify(source.decode("utf-8"), rename_locals=False,
                                       hoist_literals=False, remove_literal_statements=True)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return None
    enc = base64.b85encode(lzma.compress(small.encode("utf-8")))
    return len(_LOG_RECIPE_WRAPPER[0]) + len(enc) + len(_LOG_RECIPE_WRAPPER[1])


def _newline_bytes(data: bytes) -> int:
    return data.count(b"\r")


def count_code(folder=None, files=None, compressed: bool = True) -> CodeCount:
    """Recount the code of a record folder (its script and the folder-local modules it pulls
    in), or of the given files (the first is the script). `compressed=False` skips the two
    minified sizes (the slow part: about 1.5 s per 120 kB script)."""
    if files:
        paths = [Path(f) for f in files]
        base = paths[0].parent
    else:
        base = Path(folder)
        script = find_script(base)
        if script is None:
            return CodeCount(None, problems=["no train_gpt.py in the folder: code not "
                                             "recounted"])
        paths = [script]
    count = CodeCount(script=_rel(paths[0], base))
    seen: set[str] = set()
    queue = [(p, "script" if i == 0 else "import") for i, p in enumerate(paths)]
    sources = []
    while queue:
        p, role = queue.pop(0)
        if role == "outside":
            count.problems.append(f"{p}: the code refers to it, but it lies outside the "
                                  "record folder: not read, not counted")
            continue
        key = os.path.realpath(p)
        if key in seen:
            continue
        seen.add(key)
        try:
            data = p.read_bytes()
        except OSError as exc:
            count.problems.append(f"{p}: unreadable ({exc.strerror})")
            continue
        count.files.append(CodeFile(_rel(p, base), len(data), role, _newline_bytes(data)))
        sources.append(data)
        if role == "script" and len(count.files) == 1:
            try:
                unwrapped = unwrap(data)
            except WrapperError as exc:  # counted as shipped; the payload is not read
                count.problems.append(f"{_rel(p, base)}: {exc}")
                unwrapped = None
            if unwrapped is not None:
                payload, codec = unwrapped
                count.wrapper = {"codec": codec, "payload_bytes": len(payload)}
                data = payload
                sources[-1] = payload
        queue.extend(local_dependencies(data, p.parent, base))
    if compressed and sources:
        code = b"\n".join(sources)
        count.recipe_bytes = log_recipe_bytes(code)
        try:
            from golfpack.accounting import self_extracting, wrapper_method

            wrapper, method = self_extracting(code, count.script or "<code>")
            count.minified_bytes, count.minified_method = len(wrapper), wrapper_method(method)
        except Exception as exc:  # minifier missing or the code does not parse
            count.problems.append(f"minified size not computed: {exc}")
    return count


def _rel(p: Path, base: Path) -> str:
    try:
        return p.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return os.fspath(p)
