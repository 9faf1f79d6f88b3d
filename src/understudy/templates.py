"""Prompt-template learning: the constant text around the varying part of a task's user messages.

Callers usually wrap the thing to classify in a fixed instruction (``"Classify this review:\\n\\n"
+ review + "\\n\\nAnswer in JSON."``). A student should see only the review, so once a task has
enough logged calls the longest common prefix and suffix of their user texts are learned and
stripped from every input (``understudy.tasks.extract_input``).
"""

from __future__ import annotations

from collections.abc import Sequence

# A common prefix shorter than this is more likely a coincidence ("The ") than a template.
MIN_TEMPLATE_CHARS = 8


def _cut_to_boundary(common: str) -> str:
    """Shorten a common prefix so it ends on whitespace, never inside a word or its punctuation.

    Two inputs that happen to start with the same word ("Great film" / "Great cast"), or end
    with the same full stop, share text that belongs to the varying part; cutting at the last
    whitespace keeps it out.
    """
    for i in range(len(common) - 1, -1, -1):
        if common[i].isspace():
            return common[: i + 1]
    return ""


def _shared_start(texts: Sequence[str]) -> str:
    """The characters all texts start with (string-wise, unlike a path prefix)."""
    first, last = min(texts), max(texts)  # the lexicographic extremes bound every other text
    n = 0
    while n < min(len(first), len(last)) and first[n] == last[n]:
        n += 1
    return first[:n]


def common_prefix(texts: Sequence[str]) -> str:
    """The longest prefix all texts share, cut back to a word boundary ('' if too short)."""
    if len(texts) < 2:
        return ""
    prefix = _cut_to_boundary(_shared_start(texts))
    # Never swallow a whole text: at least one character must remain varying in each.
    shortest = min(len(t) for t in texts)
    if len(prefix) >= shortest:
        prefix = _cut_to_boundary(prefix[: shortest - 1]) if shortest > 1 else ""
    return prefix if len(prefix.strip()) >= MIN_TEMPLATE_CHARS else ""


def learn_template(texts: Sequence[str]) -> tuple[str, str]:
    """The ``(prefix, suffix)`` shared by all texts; each is '' when there is none.

    The suffix is found as the common prefix of the reversed texts after the prefix is removed,
    so prefix and suffix never overlap.
    """
    distinct = list(dict.fromkeys(texts))
    if len(distinct) < 2:
        return "", ""
    prefix = common_prefix(distinct)
    rests = [t[len(prefix) :] for t in distinct]
    suffix = common_prefix([r[::-1] for r in rests])[::-1]
    return prefix, suffix
