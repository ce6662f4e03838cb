"""Record folders: which files are logs, which runs they hold, who they are (seed identity),
which copies count once (submission.json is read by golfeval.records.submission)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from golfeval.records.parse import RunLog, parse_text
from golfeval.records.submission import (
    Submission,
    is_submission_name,
    load_submission,
    normalise_track,
)
from golfpack.errors import GolfError

LOG_SUFFIXES = (".log", ".txt", ".out")
_NOT_LOGS = ("requirements", "readme", "license", "notes", "changelog")
_NAME_SEED = re.compile(r"seed[_-]?(\d+)", re.I)
_TRAILING_SEED = re.compile(r"^[A-Za-z]+(?:_[A-Za-z]+)*[_-]?(\d+)$")
_VARIANT = re.compile(r"(?:^|[_-])(v\d+)$", re.I)


@dataclass
class Run:
    """One run of one log file, placed in its record folder."""

    file: str  # path relative to the record folder, '/'-separated
    name: str  # file, or file#k when the file holds several runs
    seed: int | None
    seed_source: str | None  # "name" | "echo" | None
    variant: str | None  # e.g. "v2" from train_v2.txt
    role: str  # "run" | "rerun" | "original"
    log: RunLog
    superseded_by: str | None = None

    @property
    def resolved(self) -> bool:
        return self.log.val_bpb is not None

    def to_dict(self, full: bool = True, config: bool = True) -> dict:
        d = {"file": self.file, "run": self.name, "seed": self.seed,
             "val_loss": self.log.val_loss, "val_bpb": self.log.val_bpb, "label": self.log.label,
             "kind": self.log.kind, "status": self.log.status}
        if full:
            d.update(seed_source=self.seed_source, variant=self.variant, role=self.role,
                     superseded_by=self.superseded_by)
            d.update({k: v for k, v in self.log.to_dict(config).items() if k not in d})
        else:
            d.update(train_time_ms=self.log.train_time_ms, total_bytes=self.log.total_bytes,
                     ambiguity=self.log.ambiguity, reason=self.log.reason)
        return d


@dataclass
class RecordFolder:
    path: str
    track: str | None
    submission: Submission | None
    runs: list  # de-duplicated Run objects
    duplicates: list = field(default_factory=list)  # {"file", "same_as", "why"}
    skipped: list = field(default_factory=list)  # {"file", "reason"}
    problems: list = field(default_factory=list)
    bytes_read: int = 0

    @property
    def name(self) -> str:
        return os.path.basename(os.path.normpath(self.path))

    def primary_runs(self) -> list:
        """Runs that stand for the record: duplicates dropped, originals replaced by reruns."""
        return [r for r in self.runs if r.superseded_by is None]

    def to_dict(self, config: bool = True) -> dict:
        return {"path": self.path, "name": self.name, "track": self.track,
                "claim": self.submission.claim_bpb if self.submission else None,
                "submission": self.submission.to_dict() if self.submission else None,
                "runs": [r.to_dict(config=config) for r in self.runs],
                "duplicates": self.duplicates,
                "skipped": self.skipped, "problems": self.problems}


def seed_from_name(path: str) -> tuple[int | None, str | None]:
    """(seed, variant) from a log file name: train_seed42, seed_42, log_10mins_seed-42,
    ternary_log_42, train0 give seeds; train_v2 gives the variant "v2"."""
    stem = os.path.splitext(os.path.basename(path))[0]
    m = _NAME_SEED.search(stem)
    if m:
        return int(m.group(1)), None
    m = _VARIANT.search(stem)
    if m:
        return None, m.group(1).lower()
    m = _TRAILING_SEED.match(stem)
    return (int(m.group(1)), None) if m else (None, None)


def _is_log_name(name: str) -> bool:
    low = name.lower()
    return low.endswith(LOG_SUFFIXES) and not low.startswith(_NOT_LOGS)


def _scan(d: Path) -> tuple[list[str], list[Path]]:
    try:
        entries = sorted(os.scandir(d), key=lambda e: e.name)
    except OSError as exc:
        raise GolfError(f"cannot list {d}: {exc.strerror}") from exc
    return ([e.name for e in entries if e.is_file()],
            [Path(e.path) for e in entries
             if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")])


def _submission_below(d: Path) -> bool:
    for _, dirnames, filenames in os.walk(d):
        dirnames[:] = [n for n in dirnames if not n.startswith(".")]
        if any(is_submission_name(f) for f in filenames):
            return True
    return False


def find_record_folders(root) -> list[Path]:
    """Record folders under `root` (or `root` itself): a folder with a submission*.json, or
    with log files and no record folder below it. Subfolders (eval reruns, logs/) belong to
    the record folder above them."""
    root = Path(root)
    if not root.is_dir():
        raise GolfError(f"{root} is not a directory")
    found: list[Path] = []

    def visit(d: Path) -> None:
        files, dirs = _scan(d)
        if any(is_submission_name(n) for n in files) or (
                any(_is_log_name(n) for n in files) and
                not any(_submission_below(c) for c in dirs)):
            found.append(d)
            return
        for c in dirs:
            visit(c)

    visit(root)
    return found


def list_log_files(folder) -> list[Path]:
    folder = Path(folder)
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames)
                   if f.lower().endswith(LOG_SUFFIXES))
    return out


def _fingerprint(log: RunLog) -> tuple:
    return (tuple((m.label, m.val_loss, m.val_bpb) for m in log.metrics), log.train_time_ms,
            log.steps, log.total_bytes)


def _looks_like_log(runs: list[RunLog]) -> bool:
    return any(r.metrics or r.steps is not None or r.echo_seed is not None or r.tokenizer
               or r.val_tokens or r.total_bytes or r.closest for r in runs)


def read_log_file(path) -> RecordFolder:
    """One log file on its own (no submission.json), shaped like a record folder."""
    path = Path(path)
    if not path.is_file():
        raise GolfError(f"{path} is not a file")
    return read_folder(path.parent, files=[path], with_submission=False)


def read_folder(folder, files=None, with_submission: bool = True) -> RecordFolder:
    """Parse every log of one record folder; identical files and repeated runs count once."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GolfError(f"{folder} is not a directory")
    sub = load_submission(folder) if with_submission else None
    rec = RecordFolder(path=str(folder), track=None, submission=sub, runs=[])
    if sub:
        rec.problems.extend(sub.problems)
    rec.track = (sub.track if sub and sub.track else None) or _track_from_path(folder)
    files = list_log_files(folder) if files is None else [Path(f) for f in files]
    # Files whose name carries the seed go first, so train_seed1337.log wins over train.log.
    files.sort(key=lambda p: (seed_from_name(p.name)[0] is None, str(p)))
    seen_hash: dict[str, str] = {}
    seen_runs: dict[tuple, str] = {}
    for path in files:
        rel = path.relative_to(folder).as_posix()
        if not _is_log_name(path.name) and with_submission:
            rec.skipped.append({"file": rel, "reason": "not a training log (by name)"})
            continue
        try:
            data = path.read_bytes()
        except OSError as exc:
            rec.problems.append(f"{rel}: unreadable ({exc.strerror})")
            continue
        rec.bytes_read += len(data)
        digest = hashlib.sha1(data).hexdigest()
        if digest in seen_hash:
            rec.duplicates.append({"file": rel, "same_as": seen_hash[digest],
                                   "why": "identical file"})
            continue
        seen_hash[digest] = rel
        logs = parse_text(data.decode("utf-8", errors="replace"))
        if not _looks_like_log(logs):
            rec.skipped.append({"file": rel, "reason": "no training-log lines"})
            continue
        name_seed, variant = seed_from_name(path.name)
        role = _role(rel)
        for log in logs:
            run_name = rel if len(logs) == 1 else f"{rel}#{log.index + 1}"
            seed, source = (name_seed, "name") if name_seed is not None else (
                (log.echo_seed, "echo") if log.echo_seed is not None else (None, None))
            if name_seed is not None and log.echo_seed is not None and log.echo_seed != name_seed:
                log.notes.append(f"file name says seed {name_seed}, the config echo says "
                                 f"seed {log.echo_seed}; using the file name")
            fp = (seed, _fingerprint(log))
            if log.metrics and fp in seen_runs:
                rec.duplicates.append({"file": run_name, "same_as": seen_runs[fp],
                                       "why": "the same run printed again (identical seed, "
                                              "scores, train time and size)"})
                continue
            seen_runs[fp] = run_name
            rec.runs.append(Run(rel, run_name, seed, source, variant, role, log))
    rec.runs.sort(key=lambda r: r.name)
    _supersede(rec)
    if not rec.runs and not rec.problems:
        rec.problems.append("no training logs" if sub or not with_submission else
                            "no training logs and no submission.json")
    return rec


def _track_from_path(folder: Path) -> str | None:
    for part in reversed(folder.resolve().parts):
        if part.lower().startswith("track"):
            return normalise_track(part)
    return None


def _role(rel: str) -> str:
    low = rel.lower()
    if "rerun" in low or any(p.startswith(("eval", "rerun")) for p in low.split("/")[:-1]):
        return "rerun"
    if "original" in low:
        return "original"
    return "run"


def _supersede(rec: RecordFolder) -> None:
    """An eval-only rerun (or a *_rerun log) replaces the other runs of its seed."""
    by_seed: dict[int, list[Run]] = {}
    for r in rec.runs:
        if r.seed is not None:
            by_seed.setdefault(r.seed, []).append(r)
    for runs in by_seed.values():
        reruns = [r for r in runs if r.resolved and (r.role == "rerun" or r.log.eval_only)]
        trained = [r for r in runs if r not in reruns]
        if reruns and trained:
            latest = reruns[-1]
            for r in runs:
                if r is not latest:
                    r.superseded_by = latest.name


def read_tree(root, progress: bool = False) -> list[RecordFolder]:
    """Every record folder under `root`."""
    folders = find_record_folders(root)
    if progress and len(folders) > 1:
        from tqdm import tqdm

        folders = tqdm(folders, desc="record folders", unit="folder", leave=False,
                       disable=None)
    return [read_folder(f) for f in folders]
