"""A coarse, documented source category for instruction records, for score-by-category
analyses. Keyword rules on the instruction and input, checked in this order:
code (programming words, code syntax), math (arithmetic, equations, numbers with operators),
writing (compose, write a story/poem/essay/letter...), classification (classify, categorize,
identify the type...), qa (everything that asks a question), other."""

from __future__ import annotations

import re

RULES = [
    ("code", re.compile(r"\b(python|java(script)?|c\+\+|sql|html|css|code|function|program|"
                        r"algorithm|regex|script|compile|debug|array|loop)\b|def |\{|\};", re.I)),
    ("math", re.compile(r"\b(calculate|compute|solve|equation|sum of|product of|percent|"
                        r"average|probability|area|perimeter|how many|how much)\b|"
                        r"\d+\s*[-+*/^x]\s*\d+", re.I)),
    ("writing", re.compile(r"\b(write|compose|draft|story|poem|essay|letter|slogan|tweet|"
                           r"rewrite|paraphrase|summari[sz]e)\b", re.I)),
    ("classification", re.compile(r"\b(classify|categori[sz]e|identify the (type|category)|"
                                  r"sentiment)\b", re.I)),
    ("qa", re.compile(r"\?|\b(what|why|how|who|when|where|explain|describe)\b", re.I)),
]
CATEGORIES = [name for name, _ in RULES] + ["other"]


def categorise(instruction: str, input_text: str = "") -> str:
    """The first matching category of a record (see the module docstring)."""
    text = f"{instruction}\n{input_text}"
    return next((name for name, pattern in RULES if pattern.search(text)), "other")
