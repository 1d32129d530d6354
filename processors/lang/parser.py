"""Hand-written tokenizer and recursive-descent parser of segment conditions (no eval).

Grammar (``docs/segment-language.md`` has the full reference)::

    expr := or ;  or := and ("or" and)* ;  and := not ("and" not)* ;  not := "not" not | cmp
    cmp  := sum (CMPOP sum | "between" sum "and" sum | "in" "[" literals "]"
                 | "within" DURATION | "is" ["not"] "null")?
    sum  := prod (("+"|"-") prod)* ;  prod := unary (("*"|"/") unary)* ;  unary := "-" unary | atom
    atom := NUMBER | STRING | DURATION | true | false | null | now | "(" expr ")" | call
          | trait.NAME | cart.FIELD | purchases.FIELD | segment.NAME
          | EVENTSET "then" "no" EVENTSET "within" DURATION
    call := ... | ("last" | "since") "(" SEQUENCE ")"
    SEQUENCE := EVENTSET ("then" EVENTSET)+ "within" DURATION ["on" PROP]
    EVENTSET := TYPE ("|" TYPE)* ["where" filter]

>>> parse("count(purchase, 30d) >= 2")  # doctest: +NORMALIZE_WHITESPACE
Compare(pos=21, op='>=', left=Aggregate(pos=0, func='count',
    events=EventSet(pos=6, types=('purchase',), filter=None), prop=None, window_ms=2592000000,
    prop_extra=False), right=Literal(pos=24, value=2))
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NamedTuple

from processors.lang import ast
from processors.lang.errors import DefinitionError, did_you_mean
from processors.lang.vocab import (
    AGGREGATES,
    CART_FIELDS,
    DATE_FUNCS,
    EVENT_TYPES,
    FUNCTIONS,
    INSTANT_FUNCS,
    KEYWORDS,
    PURCHASE_FIELDS,
    UNITS,
)

#: Deepest nesting accepted in a condition: each parenthesised group, ``not``, unary minus and
#: date-function argument is one level of nesting while parsing, and the syntax tree (one level
#: per operator, call and each further term of a chain such as ``a + b + c``) may be at most
#: this deep. The checker and the compiler recurse over the tree: they stay far from Python's
#: recursion limit at this depth (tests/unit/test_lang_errors.py compiles conditions at it).
MAX_DEPTH = 50
#: Most steps of a positive sequence ``A then B then C ... within T``.
MAX_STEPS = 8
_TOO_DEEP = f"expression nested too deeply (max {MAX_DEPTH} levels)"
_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also accepts '²' and '٣'


class Token(NamedTuple):
    kind: str  # NUM STR DUR NAME OP END
    text: str
    value: object
    pos: int


_OPS2 = ("==", "!=", "<=", ">=")
_OPS1 = "<>+-*/()[],|."
_CMP_OPS = frozenset({"==", "!=", "<", "<=", ">", ">="})
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t"}


def _err(pos: int, message: str) -> DefinitionError:
    return DefinitionError(None, pos, message)


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into tokens; raises DefinitionError at the first bad character."""
    toks: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        start = i
        if c in _DIGITS:
            while i < n and text[i] in _DIGITS:
                i += 1
            is_float = i + 1 < n and text[i] == "." and text[i + 1] in _DIGITS
            if is_float:
                i += 1
                while i < n and text[i] in _DIGITS:
                    i += 1
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            suffix = text[i:j]
            if suffix:
                if suffix not in UNITS:
                    raise _err(i, f"unknown duration unit '{suffix}' (use ms, s, m, h, d or w)")
                if is_float:
                    raise _err(start, "durations are whole numbers (write 90m, not 1.5h)")
                toks.append(Token("DUR", text[start:j], int(text[start:i]) * UNITS[suffix], start))
                i = j
                continue
            num: object = float(text[start:i]) if is_float else int(text[start:i])
            toks.append(Token("NUM", text[start:i], num, start))
            continue
        if c.isalpha() or c == "_":
            while i < n and (text[i].isalnum() or text[i] == "_"):
                i += 1
            toks.append(Token("NAME", text[start:i], text[start:i], start))
            continue
        if c in "\"'":
            i += 1
            buf: list[str] = []
            while True:
                if i >= n:
                    raise _err(start, "unterminated string")
                ch = text[i]
                if ch == c:
                    i += 1
                    break
                if ch == "\\":
                    if i + 1 >= n or text[i + 1] not in _ESCAPES:
                        raise _err(i, "bad escape in string (use \\\" \\' \\\\ \\n \\t)")
                    buf.append(_ESCAPES[text[i + 1]])
                    i += 2
                    continue
                buf.append(ch)
                i += 1
            toks.append(Token("STR", text[start:i], "".join(buf), start))
            continue
        two = text[i : i + 2]
        if two in _OPS2:
            toks.append(Token("OP", two, two, start))
            i += 2
            continue
        if c in _OPS1:
            toks.append(Token("OP", c, c, start))
            i += 1
            continue
        if c == "=":
            raise _err(i, "use '==' to compare")
        raise _err(i, f"unexpected character {c!r}")
    toks.append(Token("END", "", None, n))
    return toks


class _Parser:
    def __init__(self, text: str, custom_types: Collection[str] = ()) -> None:
        self.toks = tokenize(text)
        self.i = 0
        self.types = EVENT_TYPES | frozenset(custom_types)
        self.in_filter = False
        self.nesting = 0  # recursive descents in progress (parentheses, not, minus, ...)

    # --- token helpers --------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.toks[self.i]

    def peek(self, k: int = 1) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def at(self, text: str) -> bool:
        t = self.tok
        return t.kind in ("OP", "NAME") and t.text == text

    def take(self) -> Token:
        t = self.tok
        self.i += 1
        return t

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            raise _err(self.tok.pos, f"expected {what or repr(text)}, found {self.describe()}")
        return self.take()

    def enter(self, pos: int) -> None:
        """One more level of nesting (left again with ``leave``); bounded by MAX_DEPTH."""
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise _err(pos, _TOO_DEEP)

    def leave(self) -> None:
        self.nesting -= 1

    def describe(self) -> str:
        t = self.tok
        return "end of condition" if t.kind == "END" else repr(t.text)

    # --- grammar --------------------------------------------------------------------------
    def parse(self) -> ast.Expr:
        e = self.expr()
        if self.tok.kind != "END":
            raise _err(self.tok.pos, f"unexpected {self.describe()} (missing 'and'/'or'?)")
        deep = too_deep(e)
        if deep is not None:
            raise _err(deep.pos, _TOO_DEEP)
        return e

    def expr(self) -> ast.Expr:
        return self.or_()

    def or_(self) -> ast.Expr:
        pos = self.tok.pos
        items = [self.and_()]
        while self.at("or"):
            self.take()
            items.append(self.and_())
        return items[0] if len(items) == 1 else ast.Or(pos, tuple(items))

    def and_(self) -> ast.Expr:
        pos = self.tok.pos
        items = [self.not_()]
        while self.at("and"):
            self.take()
            items.append(self.not_())
        return items[0] if len(items) == 1 else ast.And(pos, tuple(items))

    def not_(self) -> ast.Expr:
        if self.at("not"):
            pos = self.take().pos
            self.enter(pos)
            item = self.not_()
            self.leave()
            return ast.Not(pos, item)
        return self.cmp()

    def cmp(self) -> ast.Expr:
        left = self.sum_()
        t = self.tok
        if t.kind == "OP" and t.text in _CMP_OPS:
            self.take()
            return ast.Compare(t.pos, t.text, left, self.sum_())  # type: ignore[arg-type]
        if self.at("between"):
            self.take()
            low = self.sum_()
            self.expect("and", "'and' of 'between ... and ...'")
            return ast.Between(t.pos, left, low, self.sum_())
        if self.at("in"):
            self.take()
            return ast.In(t.pos, left, self.literal_list())
        if self.at("within") and not self.in_filter:
            self.take()
            return ast.Within(t.pos, left, self.duration())
        if self.at("is"):
            self.take()
            negate = False
            if self.at("not"):
                self.take()
                negate = True
            self.expect("null", "'null' after 'is'")
            return ast.IsNull(t.pos, left, negate)
        return left

    def literal_list(self) -> tuple[ast.Scalar, ...]:
        self.expect("[", "'[' to start the list")
        out: list[ast.Scalar] = []
        while not self.at("]"):
            out.append(self.literal_value())
            if not self.at("]"):
                self.expect(",", "',' or ']'")
        self.take()
        if not out:
            raise _err(self.toks[self.i - 1].pos, "empty list")
        return tuple(out)

    def literal_value(self) -> ast.Scalar:
        t = self.tok
        sign = 1
        if self.at("-") and self.peek().kind == "NUM":
            self.take()
            sign, t = -1, self.tok
        if t.kind in ("NUM", "STR"):
            self.take()
            v = t.value
            assert isinstance(v, int | float | str)
            return sign * v if not isinstance(v, str) else v
        if t.kind == "NAME" and t.text in ("true", "false", "null"):
            self.take()
            return {"true": True, "false": False, "null": None}[t.text]
        raise _err(t.pos, f"expected a literal (number, string, true, false), "
                          f"found {self.describe()}")

    def duration(self) -> int:
        t = self.tok
        if t.kind != "DUR":
            raise _err(t.pos, f"expected a duration such as 30d or 1h, found {self.describe()}")
        self.take()
        assert isinstance(t.value, int)
        if t.value <= 0:
            raise _err(t.pos, "a duration must be positive")
        return t.value

    def sum_(self) -> ast.Expr:
        left = self.prod()
        while self.tok.kind == "OP" and self.tok.text in ("+", "-"):
            op = self.take()
            left = ast.Arith(op.pos, op.text, left, self.prod())  # type: ignore[arg-type]
        return left

    def prod(self) -> ast.Expr:
        left = self.unary()
        while self.tok.kind == "OP" and self.tok.text in ("*", "/"):
            op = self.take()
            left = ast.Arith(op.pos, op.text, left, self.unary())  # type: ignore[arg-type]
        return left

    def unary(self) -> ast.Expr:
        if self.at("-"):
            pos = self.take().pos
            nxt = self.tok
            if nxt.kind == "NUM":
                self.take()
                assert isinstance(nxt.value, int | float)
                return ast.Literal(pos, -nxt.value)
            self.enter(pos)
            item = self.unary()
            self.leave()
            return ast.Neg(pos, item)
        return self.atom()

    def atom(self) -> ast.Expr:
        t = self.tok
        if t.kind in ("NUM", "STR"):
            self.take()
            return ast.Literal(t.pos, t.value)  # type: ignore[arg-type]
        if t.kind == "DUR":
            self.take()
            assert isinstance(t.value, int)
            return ast.Duration(t.pos, t.value)
        if self.at("("):
            self.enter(self.take().pos)
            e = self.expr()
            self.expect(")", "')'")
            self.leave()
            return e
        if t.kind != "NAME":
            raise _err(t.pos, f"expected a value, found {self.describe()}")
        name = t.text
        if name in ("true", "false", "null"):
            self.take()
            return ast.Literal(t.pos, {"true": True, "false": False, "null": None}[name])
        if name == "now":
            self.take()
            return ast.Now(t.pos)
        if name in ("trait", "cart", "purchases") and self.peek().text == ".":
            return self.profile_ref()
        if name == "segment" and self.peek().text == ".":
            return self.segment_ref()
        if self.peek().text == "(" and self.peek().kind == "OP":
            return self.call()
        if self.in_filter:
            if name in KEYWORDS:
                raise _err(t.pos, f"expected a property name, found keyword '{name}'")
            self.take()
            if name == "props" and self.at("."):
                return ast.PropRef(t.pos, self.extra_name(), True)
            return ast.PropRef(t.pos, name)
        if name in self.types:
            return self.then_no()
        if name in KEYWORDS:
            raise _err(t.pos, f"expected a value, found keyword '{name}'")
        hint = did_you_mean(name, sorted(self.types | FUNCTIONS
                                         | {"trait", "cart", "purchases", "segment"}))
        raise _err(t.pos, f"unknown name '{name}'{hint}")

    def profile_ref(self) -> ast.ProfileRef:
        ns = self.take()
        self.take()  # "."
        f = self.tok
        if f.kind != "NAME":
            raise _err(f.pos, f"expected a field name after '{ns.text}.', found {self.describe()}")
        self.take()
        fields = {"cart": CART_FIELDS, "purchases": PURCHASE_FIELDS}.get(ns.text)
        if fields is not None and f.text not in fields:
            hint = did_you_mean(f.text, fields)
            raise _err(f.pos, f"unknown field '{ns.text}.{f.text}'{hint}; "
                              f"fields: {', '.join(sorted(fields))}")
        return ast.ProfileRef(ns.pos, ns.text, f.text)  # type: ignore[arg-type]

    def segment_ref(self) -> ast.SegmentRef:
        kw = self.take()
        if self.in_filter:
            raise _err(kw.pos, "'segment.NAME' cannot be used inside a where filter (it is about "
                               "the customer, not the event): put it outside, joined with and")
        self.take()  # "."
        f = self.tok
        if f.kind != "NAME":
            raise _err(f.pos, f"expected a segment name after 'segment.', found {self.describe()}")
        self.take()
        return ast.SegmentRef(kw.pos, f.text)

    def extra_name(self) -> str:
        """The NAME of ``props.NAME`` (``props`` taken, at the dot)."""
        self.take()  # "."
        p = self.tok
        if p.kind != "NAME":
            raise _err(p.pos, f"expected a property name after 'props.', found {self.describe()}")
        self.take()
        return p.text

    def event_type(self) -> str:
        t = self.tok
        if t.kind != "NAME":
            raise _err(t.pos, f"expected an event type, found {self.describe()}")
        if t.text not in self.types:
            if t.text in ("alias", "forget"):
                raise _err(t.pos, f"'{t.text}' events cannot be selected (they change identity)")
            raise _err(t.pos, f"unknown event type '{t.text}'{did_you_mean(t.text, self.types)}")
        self.take()
        return t.text

    def event_types(self) -> tuple[str, ...]:
        types = [self.event_type()]
        while self.at("|"):
            self.take()
            types.append(self.event_type())
        return tuple(dict.fromkeys(types))

    def filter_(self) -> ast.Expr | None:
        if not self.at("where"):
            return None
        self.enter(self.take().pos)
        outer, self.in_filter = self.in_filter, True
        try:
            return self.expr()
        finally:
            self.in_filter = outer
            self.leave()

    def event_set(self) -> ast.EventSet:
        pos = self.tok.pos
        types = self.event_types()
        return ast.EventSet(pos, types, self.filter_())

    def then_no(self) -> ast.ThenNo:
        first = self.event_set()
        if not self.at("then"):
            raise _err(self.tok.pos, "an event set is not a value here: use count(...), "
                                     "last(...), since(...) or 'A then no B within T'")
        pos = self.take().pos
        if not self.at("no"):
            raise _err(self.tok.pos, "'A then B within T' (a positive sequence) is not a "
                                     "condition: use it inside last(...) or since(...), e.g. "
                                     "last(A then B within 1h) within 7d; or write "
                                     "'A then no B within T'")
        self.take()
        then = self.event_set()
        if self.at("then"):
            raise _err(self.tok.pos, "'then no' takes two event sets: A then no B within T "
                                     "(no chain)")
        self.expect("within", "'within' and a duration: A then no B within 1h")
        return ast.ThenNo(pos, first, then, self.duration())

    def sequence(self, fn: str, first: ast.EventSet) -> ast.Sequence:
        """``then B [then C ...] within T [on PROP]`` after ``first`` inside ``fn(...)``."""
        pos = self.tok.pos
        steps = [first]
        while self.at("then"):
            self.take()
            if self.at("no"):
                raise _err(self.tok.pos, f"'then no' cannot be inside {fn}(...): "
                                         "'A then no B within T' is a condition by itself "
                                         "(write it outside, joined with and); "
                                         f"{fn}(A then B within T) is about A followed by B")
            steps.append(self.event_set())
        if len(steps) > MAX_STEPS:
            raise _err(pos, f"a sequence has at most {MAX_STEPS} steps")
        if not self.at("within"):
            raise _err(self.tok.pos, "a sequence needs 'within' and a duration: "
                                     f"{fn}(A then B within 1h); found {self.describe()}")
        self.take()
        within = self.duration()
        on, extra = None, False
        if self.at("on"):
            self.take()
            p = self.tok
            if p.kind != "NAME" or p.text in KEYWORDS:
                raise _err(p.pos, f"expected a property name after 'on', found {self.describe()}")
            self.take()
            on = p.text
            if on == "props" and self.at("."):
                on, extra = self.extra_name(), True
        return ast.Sequence(pos, tuple(steps), within, on, extra)

    def instant_arg(self, name: str) -> ast.EventSet | ast.Sequence:
        """The argument of last/first/since: an event set or (last, since) a sequence."""
        es = self.event_set()
        if not self.at("then"):
            return es
        if name == "first":
            raise _err(self.tok.pos, "first(...) of a sequence is not supported: use "
                                     "last(A then B within T) or since(...)")
        return self.sequence(name, es)

    def call(self) -> ast.Expr:
        fn = self.take()
        name, pos = fn.text, fn.pos
        if name not in FUNCTIONS:
            raise _err(pos, f"unknown function '{name}'{did_you_mean(name, FUNCTIONS)}")
        if self.in_filter:
            raise _err(pos, "functions are not allowed inside a 'where' filter")
        self.take()  # "("
        node: ast.Expr
        if name in AGGREGATES:
            extra = False
            if name == "count":
                events, prop = self.event_set(), None
                if self.at("then"):
                    raise _err(self.tok.pos, "a sequence 'A then B within T' can only be the "
                                             "argument of last(...) or since(...)")
            else:
                tpos = self.tok.pos
                typ = self.event_type()
                self.expect(".", f"'.' and a property: {name}({typ}.amount, 30d)")
                p = self.tok
                if p.kind != "NAME":
                    raise _err(p.pos, f"expected a property name, found {self.describe()}")
                self.take()
                prop = p.text
                if prop == "props" and self.at("."):
                    prop, extra = self.extra_name(), True
                events = ast.EventSet(tpos, (typ,), self.filter_())
            self.expect(",", "',' and a window such as 30d")
            node = ast.Aggregate(pos, name, events, prop, self.duration(),  # type: ignore[arg-type]
                                 extra)
        elif name in INSTANT_FUNCS or name == "since":
            arg = self.instant_arg(name)
            if isinstance(arg, ast.Sequence):
                node = ast.Completion(pos, name, arg)  # type: ignore[arg-type]
            elif name == "since":
                node = ast.Since(pos, arg)
            else:
                node = ast.Instant(pos, name, arg)  # type: ignore[arg-type]
        elif name == "hour_share":
            events = self.event_set()
            self.expect(",", "',' and the first hour (0-23)")
            h1 = self.hour()
            self.expect(",", "',' and the last hour (0-23)")
            node = ast.HourShare(pos, events, h1, self.hour())
        else:
            assert name in DATE_FUNCS
            self.enter(pos)
            node = ast.DateFunc(pos, name, self.expr())  # type: ignore[arg-type]
            self.leave()
        self.expect(")", "')'")
        return node

    def hour(self) -> int:
        t = self.tok
        if t.kind != "NUM" or not isinstance(t.value, int) or not 0 <= t.value <= 23:
            raise _err(t.pos, f"expected an hour 0-23, found {self.describe()}")
        self.take()
        return t.value


def depth(node: ast.Expr) -> int:
    """Levels of the syntax tree (a leaf is 1), without recursion.

    >>> depth(parse("count(purchase, 1d) + 1 > 0"))  # Compare > Arith > Aggregate
    3
    """
    best, stack = 0, [(node, 1)]
    while stack:
        n, d = stack.pop()
        best = max(best, d)
        stack.extend((c, d + 1) for c in ast.children(n))
    return best


def too_deep(node: ast.Expr, limit: int = MAX_DEPTH) -> ast.Expr | None:
    """The first node (in pre-order) deeper than ``limit`` levels, or None."""
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > limit:
            return n
        stack.extend((c, d + 1) for c in reversed(ast.children(n)))
    return None


def parse(text: str, custom_types: Collection[str] = ()) -> ast.Expr:
    """Parse a condition into the AST (syntax only; ``check.check_condition`` types it).

    ``custom_types`` are the names of the declared custom event types (a types file).
    """
    return _Parser(text, custom_types).parse()


def parse_duration(text: str) -> int:
    """A duration such as ``1h`` in milliseconds.

    >>> parse_duration("15m")
    900000
    """
    toks = tokenize(text.strip())
    if len(toks) != 2 or toks[0].kind != "DUR":
        raise _err(0, f"expected a duration such as 30d or 1h, found {text!r}")
    assert isinstance(toks[0].value, int)
    return toks[0].value
