"""Definition errors with a position, rendered with a caret line under the offending column.

>>> text = "count(cart_ad, 1h) > 0"
>>> e = DefinitionError("abandoned_cart", 6, "unknown event type 'cart_ad'", text)
>>> print(e)
segment 'abandoned_cart': condition col 7: unknown event type 'cart_ad'
    count(cart_ad, 1h) > 0
          ^
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class DefinitionError(ValueError):
    """A segment definition (or the definitions file) is invalid.

    ``segment`` is the segment name (None for file-level problems), ``pos`` the 0-based offset
    in ``text`` (the condition), rendered as a 1-based column with a caret line.
    """

    def __init__(
        self,
        segment: str | None,
        pos: int | None,
        message: str,
        text: str | None = None,
        where: str = "condition",
    ) -> None:
        self.segment = segment
        self.pos = pos
        self.message = message
        self.text = text
        self.where = where
        super().__init__(self.render())

    def with_context(self, segment: str | None, text: str | None) -> DefinitionError:
        """The same error, attributed to ``segment`` and its condition ``text``."""
        return DefinitionError(segment, self.pos, self.message, text, self.where)

    def render(self) -> str:
        head = f"segment '{self.segment}': " if self.segment is not None else ""
        if self.pos is None:
            loc = f"{self.where}: " if self.segment is not None else ""
            return f"{head}{loc}{self.message}"
        line = f"{head}{self.where} col {self.pos + 1}: {self.message}"
        if self.text is not None and "\n" not in self.text:
            line += f"\n    {self.text}\n    {' ' * self.pos}^"
        elif self.text is not None:
            # multi-line condition (YAML block): show the line holding pos
            start = self.text.rfind("\n", 0, self.pos) + 1
            end = self.text.find("\n", self.pos)
            end = len(self.text) if end < 0 else end
            line += f"\n    {self.text[start:end]}\n    {' ' * (self.pos - start)}^"
        return line


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string.

    >>> did_you_mean("cart_ad", ["cart_add", "purchase"])
    " (did you mean 'cart_add'?)"
    """
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
