"""Definition errors with a position, rendered with a caret line under the offending column.

>>> text = "count(cart_ad, 1h) > 0"
>>> e = DefinitionError("abandoned_cart", 6, "unknown event type 'cart_ad'", text)
>>> print(e)
segment 'abandoned_cart': condition col 7: unknown event type 'cart_ad'
    count(cart_ad, 1h) > 0
          ^

An error found in a file names the file and the line (``source`` and ``line``)::

>>> print(DefinitionError("buyers", None, "required (a non-empty string)", where="description",
...                       line=4, source="defs.yaml"))
defs.yaml:4: segment 'buyers': description: required (a non-empty string)
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from schemas.errors import SegstreamError


class DefinitionError(SegstreamError, ValueError):
    """A segment definition (or the definitions file) is invalid.

    ``segment`` is the segment name (None for file-level problems), ``pos`` the 0-based offset
    in ``text`` (the condition), rendered as a 1-based column with a caret line. ``where`` is
    what the error is about (the key: ``condition``, ``description``, ...; None for the file).
    ``source`` (the file name) and ``line`` (1-based, in the file) locate it in the file.
    """

    def __init__(
        self,
        segment: str | None,
        pos: int | None,
        message: str,
        text: str | None = None,
        where: str | None = "condition",
        *,
        line: int | None = None,
        source: str | None = None,
    ) -> None:
        self.segment = segment
        self.pos = pos
        self.message = message
        self.text = text
        self.where = where
        self.line = line
        self.source = source
        super().__init__(self.render())

    def with_context(self, segment: str | None, text: str | None) -> DefinitionError:
        """The same error, attributed to ``segment`` and its condition ``text``."""
        return DefinitionError(segment, self.pos, self.message, text, self.where,
                               line=self.line, source=self.source)

    def located(self, source: str | None, line: int | None) -> DefinitionError:
        """The same error, located at ``line`` of the file ``source``."""
        return DefinitionError(self.segment, self.pos, self.message, self.text, self.where,
                               line=line, source=source)

    def render(self) -> str:
        if self.source is not None and self.line is not None:
            head = f"{self.source}:{self.line}: "
        elif self.source is not None:
            head = f"{self.source}: "
        else:
            head = f"line {self.line}: " if self.line is not None else ""
        if self.segment is not None:
            head += f"segment '{self.segment}': "
        if self.pos is None:
            loc = f"{self.where}: " if self.where is not None and self.segment is not None else ""
            return f"{head}{loc}{self.message}"
        where = self.where or "condition"
        if self.text is None or "\n" not in self.text:
            line = f"{head}{where} col {self.pos + 1}: {self.message}"
            if self.text is not None:
                line += f"\n    {self.text}\n    {' ' * self.pos}^"
            return line
        # multi-line condition (YAML block): its line and column, and the line holding pos
        start = self.text.rfind("\n", 0, self.pos) + 1
        end = self.text.find("\n", self.pos)
        end = len(self.text) if end < 0 else end
        row = self.text.count("\n", 0, start) + 1
        return (f"{head}{where} line {row} col {self.pos - start + 1}: {self.message}"
                f"\n    {self.text[start:end]}\n    {' ' * (self.pos - start)}^")


class CombinedDefinitionError(DefinitionError):
    """Several definition errors found in one file, reported together (in file order).

    The attributes (``segment``, ``message``, ...) are the first error's; ``errors`` has all.

    >>> print(CombinedDefinitionError([DefinitionError(None, None, "a", line=1, source="f.yaml"),
    ...                         DefinitionError("x", None, "b", where="tags", line=3)]))
    f.yaml:1: a
    line 3: segment 'x': tags: b
    """

    def __init__(self, errors: Sequence[DefinitionError]) -> None:
        if not errors:
            raise ValueError("CombinedDefinitionError needs at least one error")
        self.errors = tuple(errors)
        first = self.errors[0]
        super().__init__(first.segment, first.pos, first.message, first.text, first.where,
                         line=first.line, source=first.source)

    def render(self) -> str:
        return "\n".join(e.render() for e in self.errors)


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest option, or an empty string.

    >>> did_you_mean("cart_ad", ["cart_add", "purchase"])
    " (did you mean 'cart_add'?)"
    """
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""
