"""components/cron.py: deployment windows CodePipeline takes pass, and each field it would refuse is named."""

import pytest

from components.cron import cron_problem

VALID = [
    "* * 9-16 ? * MON-THU *",  # the README's example
    "* * 9-16 ? * MON-THU",  # the year is optional
    "* 0/15 9-16 ? * mon,wed,fri 2026-2027",  # names in any case, steps, lists, a year range
    "* */30 * ? JAN-DEC 2-6 *",
    "* 0-59 0-23 1-31 1-12 ? 1970-2199",  # every field at both ends of its range
    "* * * L * ?",  # last day of the month
    "* * * L-3 * ?",  # three days before it
    "* * * LW * ?",  # last weekday
    "* * * 15W * ?",  # weekday nearest the 15th
    "* * * 1,15 * ?",
    "* * * ? * L",  # Saturday
    "* * * ? * 6L",  # last Friday
    "* * * ? * FRI#3",  # third Friday
    "* * * ? * 7#5",
    "*  * 9-16 ?\t* MON-THU ",  # the reference separates fields by white space
    "* * 22-2 ? * FRI-MON",  # ranges that wrap (not years)
    "* * * lw * ?",  # specials in any case, as names are
    "* * * ? * 6l",
    "* 9-17/2 5/15 ? */3 MON 2026/2",
]

INVALID = [
    ("cron(0 9 * * ? *)", "write the fields alone, without cron( )"),
    ("rate(5 minutes)", "without rate( )"),
    ("* * 9-16 ? *", "needs six or seven fields"),
    ("* * 9-16 ? * MON * *", "needs six or seven fields"),
    ("* 1,,2 9-16 ? * MON", "minutes '1,,2' has an empty item between commas"),
    ("", "needs six or seven fields"),
    ("* * 9_16 ? * MON", "hours '9_16' has a character no cron field takes"),
    ("* * * ? * MON\u00a0*", "has a character no cron field takes"),  # a no-break space is not a separator
    ("* * * 1-7 * ? 2030-2026", "year '2030-2026' runs backwards"),
    ("* * 9-16 ? * MON-THU\n", "has a character no cron field takes"),  # `cron: |` in YAML, in any field
    ("* * * ? * 6L\n", "has a character no cron field takes"),
    ("* * * ? * MON-5", "day-of-week 'MON-5' is not"),  # Quartz refuses a name-number range
    ("* * * ? JAN-3 *", "month 'JAN-3' is not"),
    ("0 * 9-16 ? * MON *", "seconds '0' must be '*'"),
    ("* 99 9-16 ? * MON *", "minutes '99' is not '*', a value or a range of 0-59"),
    ("* ² 9-16 ? * MON *", "minutes '²' has a character no cron field takes"),  # int() would read it
    ("* */0 9-16 ? * MON *", "minutes step '0' in '*/0' is not a number from 1 to 59"),
    ("* 0/60 9-16 ? * MON *", "minutes step '60'"),
    ("* 1-2-3 9-16 ? * MON *", "minutes '1-2-3' is not"),
    ("* * 9-24 ? * MON *", "hours '9-24' is not '*', a value or a range of 0-23"),
    ("* * 9-16 * * MON *", "exactly one of the two is '?'"),
    ("* * 9-16 ? * ? *", "exactly one of the two is '?'"),
    ("* * 9-16 32 * ? *", "day-of-month '32' is not"),
    ("* * 9-16 0 * ? *", "day-of-month '0' is not"),
    ("* * * L-31 * ?", "L-N counts back at most 30 days"),
    ("* * * 32W * ?", "NW needs a day of 1-31"),
    ("* * 9-16 ? 13 MON *", "month '13' is not '*', a value or a range of 1-12 or JAN-DEC"),
    ("* * 9-16 ? JUNE MON *", "month 'JUNE' is not"),
    ("* * 9-16 ? * FUN *", "day-of-week 'FUN' is not '*', a value or a range of 1-7 or SUN-SAT"),
    ("* * 9-16 ? * 0 *", "day-of-week '0' is not"),
    ("* * * ? * 8L", "'8' is not a day of 1-7 or SUN-SAT"),
    ("* * * ? * MON#6", "#N is the Nth such day of the month, 1-5"),
    ("* * * ? * MON,L", "day-of-week 'L' is not"),  # L stands alone
    ("* * 9-16 ? * MON 1969", "year '1969' is not '*', a value or a range of 1970-2199"),
]


@pytest.mark.parametrize("expression", VALID)
def test_windows_codepipeline_documents_pass(expression):
    assert cron_problem(expression) is None


@pytest.mark.parametrize("expression, words", INVALID)
def test_each_refused_window_names_its_field_and_value(expression, words):
    problem = cron_problem(expression)
    assert problem is not None and words in problem, problem
    assert "\n" not in problem
