"""Scheme specs: which tensor is stored how, by name pattern (first match wins).

A spec is a `;`-separated list of `PATTERN=SCHEME` rules, e.g.
`tok_emb=int8:sdclip(20);*.mlp.*=int5:gptq-lite;*=int6:gptq-lite`. A pattern is an
fnmatch glob matched against the full tensor name; a pattern without wildcards also matches
everything under that module prefix (`tok_emb` matches `tok_emb.weight`).

Two selectors describe the passthrough policy of the records:
`@control` (names containing attn_scale, mlp_scale, resid_mix, q_gain, skip_weight, or the
April records' skip_gate, attn_gate, smear_gate and parallel_ lane weights) and
`@small` / `@small(N)` (float tensors with <= N elements, default 65,536).

Resolution: non-float tensors are always stored `raw` (exact). Then the rules, in order:
`DEFAULT_PASSTHROUGH` (unless the spec has its own `@` rules), the user's rules, and
`DEFAULT_CATCHALL` last, so a partial spec such as `*.mlp.*=int5:gptq-lite` only changes
what it names.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from golfpack.quant.rows import Scheme, SchemeError, format_scheme, parse_scheme

CONTROL_PATTERNS = ("attn_scale", "mlp_scale", "resid_mix", "q_gain", "skip_weight",
                    "skip_gate", "attn_gate", "smear_gate", "parallel_")
SMALL_NUMEL = 65_536
DEFAULT_PASSTHROUGH = "@control=fp32;@small=fp16"
DEFAULT_CATCHALL = "tok_emb*=int8:gptq-lite;*=int6:gptq-lite"
DEFAULT_SPEC = f"{DEFAULT_PASSTHROUGH};{DEFAULT_CATCHALL}"
FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")

_SMALL_RE = re.compile(r"^@small(?:\((\d+)\))?$")


@dataclass(frozen=True)
class Rule:
    pattern: str
    scheme: Scheme
    user: bool = True  # False for the built-in defaults (not required to match anything)

    def matches(self, name: str, numel: int) -> bool:
        if self.pattern == "@control":
            return any(c in name for c in CONTROL_PATTERNS)
        m = _SMALL_RE.match(self.pattern)
        if m:
            return numel <= int(m.group(1) or SMALL_NUMEL)
        if name == self.pattern or fnmatch.fnmatchcase(name, self.pattern):
            return True  # (exact first: `qo_bank[3]` names one bank slice, not a glob class)
        return not any(ch in self.pattern for ch in "*?[") and (
            name.startswith(self.pattern + ".") or name.startswith(self.pattern + "["))

    def __str__(self) -> str:
        return f"{self.pattern}={format_scheme(self.scheme)}"


def parse_rules(spec: str | None, user: bool = True) -> list[Rule]:
    """Parse `PAT=SCHEME;PAT=SCHEME` (whitespace and empty items ignored)."""
    rules = []
    for item in (spec or "").replace("\n", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise SchemeError(f"scheme rule {item!r} must look like PATTERN=SCHEME")
        pattern, text = (p.strip() for p in item.split("=", 1))
        if not pattern:
            raise SchemeError(f"scheme rule {item!r} has an empty pattern")
        if pattern.startswith("@") and pattern != "@control" and not _SMALL_RE.match(pattern):
            raise SchemeError(f"unknown selector {pattern!r} (use @control, @small or @small(N))")
        try:
            scheme = parse_scheme(text)
        except SchemeError as exc:
            raise SchemeError(f"scheme rule {item!r}: {exc}") from None
        rules.append(Rule(pattern, scheme, user))
    return rules


def effective_rules(spec: str | None) -> list[Rule]:
    """The full rule list a spec stands for (see the module docstring). None means the
    default; a spec given but holding no rule ('' or ';;;') is refused, never read as it."""
    user = parse_rules(spec)
    if spec is not None and not user:
        raise SchemeError(f"scheme spec {spec!r} holds no rule (give none for the default)")
    head = [] if any(r.pattern.startswith("@") for r in user) else \
        parse_rules(DEFAULT_PASSTHROUGH, user=False)
    return head + user + parse_rules(DEFAULT_CATCHALL, user=False)


def resolve(spec: str | None, tensors: Mapping[str, tuple[str, int]]) -> dict[str, Scheme]:
    """Map each tensor (name -> (dtype name, numel)) to its scheme.

    Raises SchemeError naming any user pattern rule that matches no tensor at all
    (selectors such as @control may match nothing: not every model has control tensors).
    """
    rules = effective_rules(spec)
    used = [False] * len(rules)
    out = {}
    for name, (dtype, numel) in tensors.items():
        is_float = dtype in FLOAT_DTYPES
        chosen = None
        for i, rule in enumerate(rules):
            if rule.matches(name, numel):
                used[i] = True
                if chosen is None:
                    chosen = rule.scheme
        if not is_float:
            chosen = Scheme("raw")
        out[name] = chosen
    unused = [str(r) for r, u in zip(rules, used, strict=True)
              if r.user and not u and not r.pattern.startswith("@")]
    if unused:
        example = next(iter(tensors), "?")
        raise SchemeError(f"scheme rule(s) {', '.join(unused)} match no tensor "
                          f"(names look like {example!r})")
    return out


def kept_by_passthrough(spec: str | None, tensors: Mapping[str, tuple[str, int]]) -> list[str]:
    """Float tensors that a pattern rule of the user's names, but that the built-in
    passthrough (in force because the spec has no `@` rule of its own) stores first: on a
    small model `*=int6` leaves every matrix of <= 65,536 elements in fp16. Callers say so."""
    rules = effective_rules(spec)
    out = []
    for name, (dtype, numel) in tensors.items():
        if dtype not in FLOAT_DTYPES:
            continue
        first = next((r for r in rules if r.matches(name, numel)), None)
        if first is not None and not first.user and first.pattern.startswith("@") and any(
                r.user and not r.pattern.startswith("@") and r.matches(name, numel)
                for r in rules):
            out.append(name)
    return out


def kept_in_float(spec: str | None, tensors: Mapping[str, tuple[str, int]]) -> dict[str, str]:
    """Float tensors that a later rule would quantize but that a built-in passthrough rule
    keeps in float first, mapped to that rule (e.g. '@small=fp16'): under the default spec
    the tiny model's matrices (all <= 65,536 elements) stay fp16 and the artifact is twice
    the size one expects. Covers the default catch-all as well as the user's own rules
    (kept_by_passthrough); callers pass the tensors for which this is a surprise."""
    rules = effective_rules(spec)
    out = {}
    for name, (dtype, numel) in tensors.items():
        if dtype not in FLOAT_DTYPES:
            continue
        hits = [r for r in rules if r.matches(name, numel)]
        # control tensors (scales, mixes, gains) in float surprise no one: not reported
        if hits and not hits[0].user and hits[0].pattern.startswith("@small") and \
                hits[0].scheme.kind != "int" and any(
                    r.scheme.kind == "int" and not r.pattern.startswith("@") for r in hits[1:]):
            out[name] = str(hits[0])
    return out


_LAYER_RE = re.compile(r"(?<=\.)\d+(?=\.)|^\d+(?=\.)|(?<=\[)\d+(?=\]$)")


def family(name: str) -> str:
    """The tensor family across layers: layer indices replaced by '*'
    ('blocks.3.mlp.fc.weight' -> 'blocks.*.mlp.fc.weight', bank slice 'qo_bank[3]' ->
    'qo_bank[*]')."""
    return _LAYER_RE.sub("*", name)


def describe(schemes: Mapping[str, Scheme]) -> list[tuple[str, str]]:
    """(family, scheme text) pairs in first-seen order: a compact summary for reports."""
    seen: dict[tuple[str, str], None] = {}
    for name, s in schemes.items():
        seen.setdefault((family(name), format_scheme(s)), None)
    return list(seen)


def match_names(pattern: str, names: Iterable[str]) -> list[str]:
    """Names a single pattern selects (for error messages and tooling)."""
    rule = Rule(pattern, Scheme("raw"))
    return [n for n in names if rule.matches(n, 0)]
