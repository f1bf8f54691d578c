"""Result rows and the printed table: each figure with its target and PASS/FAIL, then a summary."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Row:
    phase: str
    label: str
    value: str
    target: str = "-"
    # "PASS", "FAIL", "ERROR", or "info" for figures reported without a target.
    result: str = "info"
    note: str = ""


@dataclass
class Report:
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)

    def check(self, phase: str, label: str, value: float, minimum: float, fmt: str, unit: str = "") -> None:
        """A figure with a lower bound: PASS when value >= minimum."""
        self.add(Row(phase, label, f"{value:{fmt}}{unit}", f">= {minimum:{fmt}}{unit}",
                     "PASS" if value >= minimum else "FAIL"))

    def check_max(self, phase: str, label: str, value: float, maximum: float, fmt: str, unit: str = "") -> None:
        """A figure with an upper bound: PASS when value <= maximum."""
        self.add(Row(phase, label, f"{value:{fmt}}{unit}", f"<= {maximum:{fmt}}{unit}",
                     "PASS" if value <= maximum else "FAIL"))

    def error(self, phase: str, exc: BaseException) -> None:
        self.add(Row(phase, "phase failed", f"{type(exc).__name__}: {exc}"[:200], "-", "ERROR"))

    @property
    def failed_phases(self) -> list[str]:
        return sorted({r.phase for r in self.rows if r.result == "ERROR"})

    @property
    def missed(self) -> list[Row]:
        """The checks that did not meet their target."""
        return [r for r in self.rows if r.result == "FAIL"]

    @property
    def exit_code(self) -> int:
        """0: every target met; 1: a target missed; 2: a phase could not run at all (it has no figures to check)."""
        if self.failed_phases:
            return 2
        return 1 if self.missed else 0

    def verdict(self) -> str:
        """One line for stderr naming what failed, or that every target was met."""
        parts = [f"{r.phase}: {r.label} = {r.value} (target {r.target})" for r in self.missed]
        parts += [f"{p}: phase did not complete" for p in self.failed_phases]
        return "bench: FAILED: " + "; ".join(parts) if parts else "bench: every target met"

    def render(self) -> str:
        headers = ("phase", "measurement", "value", "target", "result")
        body = [(r.phase, r.label, r.value, r.target, r.result) for r in self.rows]
        widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(headers)]
        right = {2, 3}

        def line(cells: tuple[str, ...]) -> str:
            return "| " + " | ".join(
                c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            ) + " |"

        out = [self.title, line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
        out += [line(b) for b in body]
        checks = [r for r in self.rows if r.result in ("PASS", "FAIL")]
        passed = [r for r in checks if r.result == "PASS"]
        failed = self.missed
        summary = f"SUMMARY: {len(passed)}/{len(checks)} targets met"
        if failed:
            summary += "; below target: " + "; ".join(f"{r.label} {r.value} (target {r.target})" for r in failed)
        if self.failed_phases:
            summary += "; phases that did not complete: " + ", ".join(self.failed_phases)
        out += ["", summary]
        out += [f"  note: {n}" for n in self.notes]
        return "\n".join(out)


def rate(n: float) -> str:
    return f"{n:,.0f}"
