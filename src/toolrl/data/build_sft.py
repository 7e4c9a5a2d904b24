"""ReTool's cold-start construction (`toolrl data build-sft`): text solutions -> verified code-integrated SFT rows.

Per row: the rewrite template (a file the user can replace) asks a teacher to turn the manual calculations of a
text solution into code; every code block then runs in the sandbox, in order, and its real output replaces the
teacher's claimed one (:mod:`toolrl.data.sft_trace`); the trace is kept only when its format is right and its
final answer grades equal to the ground truth.

Files (all append-only, so an interruption loses nothing and a rerun skips done ids):
- ``OUT`` (``.jsonl``): kept rows, ``{"id", "messages": [prompt..., assistant], ...}``, which ``sft.data`` reads;
- ``OUT.drops.jsonl``: dropped rows with their reason and the teacher's text;
- ``OUT.report.json``: counts of the whole file (all runs) and of the last run.
Rows that failed for infrastructure reasons (teacher unreachable, sandbox broken) are counted but not marked
done: the next run tries them again.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

from toolrl.config.schema import RootConfig
from toolrl.data.sft_trace import RETRYABLE, TEACHER_ERROR, Verdict, build_trace
from toolrl.data.teachers import Teacher, TeacherError
from toolrl.errors import DataError
from toolrl.types import Problem

PLACEHOLDERS = ("{problem}", "{solution}", "{answer}")


def default_template(tool_format: str) -> str:
    return resources.files("toolrl.data").joinpath("templates", f"rewrite_{tool_format}.txt").read_text(encoding="utf-8")


def load_template(path: str | Path | None, tool_format: str) -> str:
    """The rewrite prompt: a user file, or the default for the tool format. It must hold ``{problem}`` and
    ``{solution}`` (``{answer}`` is optional)."""
    text = default_template(tool_format) if path is None else _read(Path(path))
    missing = [p for p in PLACEHOLDERS[:2] if p not in text]
    if missing:
        raise DataError(f"rewrite template {path or '(default)'} lacks {', '.join(missing)}",
                        "the template is the teacher's prompt; it must contain {problem} and {solution}")
    return text


def _read(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"rewrite template '{path}' not found", "give a text file with {problem} and {solution} in it")
    return path.read_text(encoding="utf-8")


def render_template(template: str, problem: str, solution: str, answer: str) -> str:
    """Fill the placeholders (plain replacement: templates are full of LaTeX braces).

    >>> render_template("Q: {problem} S: {solution} A: \\\\boxed{{answer}}", "1+1?", "two", "2")
    'Q: 1+1? S: two A: \\\\boxed{2}'
    """
    return template.replace("{problem}", problem).replace("{solution}", solution).replace("{answer}", answer)


def side_paths(out: Path) -> tuple[Path, Path]:
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.drops.jsonl"), out.with_name(f"{stem}.report.json")


def read_done(path: Path) -> list[dict[str, Any]]:
    """Complete JSON lines of an append-only file; a torn last line (killed mid-write) is cut off."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):  # an interrupted write: keep what is whole
        data = data[: data.rfind(b"\n") + 1]
        path.write_bytes(data)
    out = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise DataError(f"{path}:{n} is not valid JSON", "this file is written by build-sft; "
                                "remove the damaged line to resume") from None
    return out


@dataclass
class Outcome:
    id: str
    reason: str | None  # None = kept
    detail: str = ""
    calls: int = 0
    replaced: int = 0  # teacher-claimed outputs replaced by real ones


@dataclass
class BuildReport:
    out: str
    teacher: str
    input_rows: int
    skipped_done: int = 0
    run: Counter = field(default_factory=Counter)  # this run: "kept" and reasons
    total_kept: int = 0
    total_dropped: dict[str, int] = field(default_factory=dict)  # the whole file: reason -> rows
    retry: dict[str, int] = field(default_factory=dict)  # this run's rows left for the next run
    replaced_outputs: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["run"] = dict(self.run)
        return d


@dataclass
class BuildOptions:
    concurrency: int = 4
    require_success: bool = False  # drop traces where a block raised / timed out


def solution_column(pset_columns: Any) -> str:
    """Where a row's text solution is: ``data.solution_key``, a detected column, or the answer column when the
    answer itself came from a worked solution (MATH-style ``solution`` with a boxed answer)."""
    if pset_columns.solution:
        return pset_columns.solution
    if pset_columns.answer_from_text:
        return pset_columns.answer
    raise DataError("no text-solution column found", "set data.solution_key=COLUMN (the worked solution to rewrite)")


class SFTBuilder:
    """Runs the rows through teacher -> sandbox -> checks, writing each result as soon as it is known."""

    def __init__(self, cfg: RootConfig, teacher: Teacher, sandbox: Any, template: str, out: Path,
                 options: BuildOptions = BuildOptions()) -> None:
        self.cfg = cfg
        self.teacher = teacher
        self.sandbox = sandbox
        self.template = template
        self.out = out
        self.drops, self.report_path = side_paths(out)
        self.options = options
        self._lock = threading.Lock()

    def _grade(self, problem: Problem) -> Callable[[str], bool]:
        from toolrl.reward import grade_answer

        return lambda text: grade_answer(text, problem.answer, self.cfg.tool.format, self.cfg.reward.grade_timeout_s)

    def process(self, problem: Problem, solution: str) -> tuple[Outcome, dict[str, Any] | None]:
        """One row: the outcome, and the line to append (kept row or drop record; None = retry later)."""
        messages = [{"role": "user", "content": render_template(self.template, problem.problem, solution, problem.answer)}]
        try:
            completion = self.teacher.complete(messages)
        except TeacherError as e:
            return Outcome(problem.id, TEACHER_ERROR, str(e)), None
        text = completion.text
        session = f"build-sft/{problem.id}"
        try:
            verdict: Verdict = build_trace(
                text, self.cfg.tool, lambda code: self.sandbox.run(code, timeout_s=self.cfg.tool.timeout_s, session=session),
                self._grade(problem), self.options.require_success)
        finally:
            self.sandbox.close_session(session)
        trace = verdict.trace
        outcome = Outcome(problem.id, verdict.reason, verdict.detail, len(trace.results) if trace else 0,
                          trace.claimed_replaced if trace else 0)
        if verdict.reason in RETRYABLE:
            return outcome, None
        if verdict.reason is not None:
            if completion.truncated:  # the likely cause of a malformed or answerless rewrite
                outcome.detail = f"{outcome.detail} (the teacher hit its token limit: raise --max-tokens)".strip()
            return outcome, {"id": problem.id, "reason": verdict.reason, "detail": outcome.detail, "teacher_text": text,
                             "truncated": completion.truncated, "trace": trace.text if trace else None}
        from toolrl.rollout.prompts import chat_messages

        assert trace is not None
        row = {"id": problem.id, "messages": [*chat_messages(problem, self.cfg), {"role": "assistant", "content": trace.text}],
               "answer": problem.answer, "calls": len(trace.results),
               "call_kinds": [r.kind.value for r in trace.results], "replaced_outputs": trace.claimed_replaced,
               "teacher": self.teacher.name}
        if "data_source" in problem.meta:
            row["data_source"] = problem.meta["data_source"]
        return outcome, row

    def _append(self, path: Path, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock, path.open("a", encoding="utf-8") as f:  # one whole line per write
            f.write(line)
            f.flush()

    def run(self, rows: Sequence[tuple[Problem, str]], on_outcome: Callable[[Outcome], None] | None = None,
            on_start: Callable[[int, int], None] | None = None) -> BuildReport:
        """Process every row not done yet. ``on_start(to_do, already_done)`` and ``on_outcome`` (each result) feed
        the CLI's progress bar."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        kept_before = read_done(self.out)
        dropped_before = read_done(self.drops)
        done = {str(r.get("id")) for r in kept_before} | {str(r.get("id")) for r in dropped_before}
        todo = [(p, s) for p, s in rows if p.id not in done]
        report = BuildReport(out=str(self.out), teacher=self.teacher.name, input_rows=len(rows),
                             skipped_done=len(rows) - len(todo))
        if on_start is not None:
            on_start(len(todo), report.skipped_done)
        it = iter(todo)
        with ThreadPoolExecutor(max_workers=max(1, self.options.concurrency)) as pool:
            running: set[Future] = set()
            try:
                while True:
                    while len(running) < max(1, self.options.concurrency):  # submit lazily: a Ctrl-C stops quickly
                        nxt = next(it, None)
                        if nxt is None:
                            break
                        running.add(pool.submit(self.process, *nxt))
                    if not running:
                        break
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        outcome, line = fut.result()
                        if line is not None:
                            self._append(self.out if outcome.reason is None else self.drops, line)
                        report.run[outcome.reason or "kept"] += 1
                        report.replaced_outputs += outcome.replaced
                        if outcome.reason in RETRYABLE:
                            report.retry[outcome.reason] = report.retry.get(outcome.reason, 0) + 1
                        if on_outcome is not None:
                            on_outcome(outcome)
            finally:
                for fut in running:
                    fut.cancel()
        kept = read_done(self.out)
        report.total_kept = len(kept)
        report.total_dropped = dict(Counter(str(r.get("reason")) for r in read_done(self.drops)))
        self.report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
        return report
