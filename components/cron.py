"""CodePipeline's DeploymentWindow cron expressions, checked field by field.

The rule reference (codepipeline/latest/userguide/rule-reference-DeploymentWindow)
documents six fields and an optional seventh, each with its values and special
characters. An expression CodePipeline would refuse should fail the plan, naming
the field and the value, not `pulumi up` half-way through creating the pipeline.

    seconds        *            (no other value)
    minutes        0-59         , - * /
    hours          0-23         , - * /
    day-of-month   1-31         , - * ? / L W
    month          1-12 JAN-DEC , - * /
    day-of-week    1-7 SUN-SAT  , - * ? / L #
    year           1970-2199    , - * /     (optional)

As in other AWS cron dialects (EventBridge's), one of day-of-month and day-of-week
is `?` and the other is not.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_NUMBER = re.compile(r"^[0-9]{1,4}$")  # ASCII digits only: int() would take '²' or '٣'
MONTHS = {name: number for number, name in enumerate(
    ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), start=1)}
DAYS = {name: number for number, name in enumerate(("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"), start=1)}


class Field(NamedTuple):
    name: str
    low: int
    high: int
    names: dict[str, int]
    # Quartz reads a range that runs backwards (22-2) as wrapping around, in every field but the year.
    wraps: bool = True


MINUTES = Field("minutes", 0, 59, {})
HOURS = Field("hours", 0, 23, {})
DAY_OF_MONTH = Field("day-of-month", 1, 31, {})
MONTH = Field("month", 1, 12, MONTHS)
DAY_OF_WEEK = Field("day-of-week", 1, 7, DAYS)
YEAR = Field("year", 1970, 2199, {}, wraps=False)
EXAMPLE = "* * 9-16 ? * MON-THU *"
_NAMES = ("seconds", *(f.name for f in (MINUTES, HOURS, DAY_OF_MONTH, MONTH, DAY_OF_WEEK, YEAR)))  # in field order
_CHARACTERS = re.compile(r"^[0-9A-Za-z*?,/#-]+$")
_DAY_OF_MONTH_SPECIAL = re.compile(r"^(?:L|LW|L-([0-9]{1,2})|([0-9]{1,2})W)$")
_DAY_OF_WEEK_SPECIAL = re.compile(r"^(?:L|([0-9A-Za-z]{1,3})L|([0-9A-Za-z]{1,3})#([0-9]{1,2}))$")


def _value(text: str, field: Field) -> int | None:
    if _NUMBER.fullmatch(text):
        number = int(text)
        return number if field.low <= number <= field.high else None
    return field.names.get(text.upper())


def _range(field: Field) -> str:
    names = f" or {min(field.names, key=field.names.get)}-{max(field.names, key=field.names.get)}" if field.names else ""
    return f"{field.low}-{field.high}{names}"


def _item_problem(item: str, field: Field) -> str | None:
    """One comma-separated part: `*`, a value or a range, with an optional `/step`."""
    base, slash, step = item.partition("/")
    if slash and not (_NUMBER.fullmatch(step) and 1 <= int(step) <= field.high):
        return f"{field.name} step {step!r} in {item!r} is not a number from 1 to {field.high}"
    if base == "*":
        return None
    ends = base.split("-")
    if len(ends) > 2 or any(_value(end, field) is None for end in ends) or (
            len({bool(_NUMBER.fullmatch(end)) for end in ends}) > 1):  # MON-5: Quartz refuses a mixed range
        return f"{field.name} {item!r} is not '*', a value or a range of {_range(field)}"
    if not field.wraps and len(ends) == 2 and _value(ends[0], field) > _value(ends[1], field):
        return f"{field.name} {item!r} runs backwards: the first {field.name} comes first"
    return None


def _field_problem(text: str, field: Field) -> str | None:
    for item in text.split(","):
        if not item:
            return f"{field.name} {text!r} has an empty item between commas"
        problem = _item_problem(item, field)
        if problem:
            return problem
    return None


def _day_of_month_problem(text: str) -> str | None:
    special = _DAY_OF_MONTH_SPECIAL.fullmatch(text.upper())  # l, w as L, W: names are read in any case
    if special is None:
        return _field_problem(text, DAY_OF_MONTH)
    offset, weekday = special.groups()
    if offset is not None and int(offset) > 30:
        return f"day-of-month {text!r}: L-N counts back at most 30 days"
    if weekday is not None and _value(weekday, DAY_OF_MONTH) is None:
        return f"day-of-month {text!r}: NW needs a day of 1-31"
    return None


def _day_of_week_problem(text: str) -> str | None:
    special = _DAY_OF_WEEK_SPECIAL.fullmatch(text.upper())
    if special is None:
        return _field_problem(text, DAY_OF_WEEK)
    last, nth, which = special.groups()
    day = last if last is not None else nth
    if day is not None and _value(day, DAY_OF_WEEK) is None:
        return f"day-of-week {text!r}: {day!r} is not a day of {_range(DAY_OF_WEEK)}"
    if which is not None and not 1 <= int(which) <= 5:
        return f"day-of-week {text!r}: #N is the Nth such day of the month, 1-5"
    return None


def cron_problem(expression: str) -> str | None:
    """Why CodePipeline would refuse `expression` as a deployment window, or None."""
    if expression.startswith(("cron(", "rate(")):
        return f"write the fields alone, without {expression.split('(')[0]}( ), such as {EXAMPLE!r}"
    fields = re.split(r"[ \t]+", expression.strip(" \t"))  # white space as Quartz reads it: spaces, tabs
    if len(fields) not in (6, 7):
        return ("needs six or seven fields separated by spaces (seconds minutes hours day-of-month "
                f"month day-of-week [year]), such as {EXAMPLE!r}")
    strange = next((i for i, f in enumerate(fields) if not _CHARACTERS.fullmatch(f)), None)
    if strange is not None:
        return (f"{_NAMES[strange]} {fields[strange][:40]!r} has a character no cron field takes "
                "(digits, names, * ? , - / L W #)")
    seconds, minutes, hours, day_of_month, month, day_of_week, *year = fields
    if seconds != "*":
        return f"seconds {seconds!r} must be '*': a window is set in minutes"
    if (day_of_month == "?") == (day_of_week == "?"):
        return (f"day-of-month {day_of_month!r} and day-of-week {day_of_week!r}: exactly one of the two "
                "is '?' (no specific value)")
    problems = (
        _field_problem(minutes, MINUTES),
        _field_problem(hours, HOURS),
        None if day_of_month == "?" else _day_of_month_problem(day_of_month),
        _field_problem(month, MONTH),
        None if day_of_week == "?" else _day_of_week_problem(day_of_week),
        *(_field_problem(value, YEAR) for value in year),
    )
    return next((problem for problem in problems if problem), None)
