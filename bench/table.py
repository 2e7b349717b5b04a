"""Figures beside their limits: the table every benchmark prints."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Row:
    figure: str
    result: float
    unit: str
    limit: float | None = None  # measured in the same run; None when a figure has no limit
    limit_is: str = ""  # what the limit is
    aim: str = ""
    higher_is_better: bool = True
    as_multiple: bool = False  # the ratio as result / limit ("1.3x the limit"), whichever is better

    @property
    def ratio(self) -> float | None:
        if not self.limit:
            return None
        return self.result / self.limit if self.higher_is_better or self.as_multiple else self.limit / self.result


def print_table(rows: list[Row]) -> None:
    cells = [["figure", "result", "limit (same run)", "ratio", "aim"]]
    for row in rows:
        limit = f"{_number(row.limit)} {row.unit}  ({row.limit_is})" if row.limit is not None else row.limit_is
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        cells.append([row.figure, f"{_number(row.result)} {row.unit}", limit, ratio, row.aim])
    widths = [max(len(line[index]) for line in cells) for index in range(len(cells[0]))]
    for number, line in enumerate(cells):
        print(" | ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if number == 0:
            print("-|-".join("-" * width for width in widths))


def _number(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"
