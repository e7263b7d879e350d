"""The text policy of every API, applied once at the boundary: no NUL or lone surrogate anywhere, NFC, clean names.

`TextPolicy` is pure ASGI middleware in front of a service: it refuses NUL and lone surrogates in the path, the query
and JSON bodies (422 naming the field), bounds JSON nesting, and hands the service NFC text, so no service can store
text a database refuses (PostgreSQL: NUL; SQLite's encoder: lone surrogates) or two spellings of one word.
`check_name` is the stricter rule for names shown to others, called by the domains that own them.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse
from typing import Any

from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from gatherly.kernel.errors import InvalidInput
from gatherly.kernel.limits import read_body, replay, send_problem
from gatherly.kernel.routes import is_json_content_type

# Deeper JSON than this is refused: no request of this API nests more than a few levels, and deep nesting is
# the cheap way to make a parser or a validator recurse for a long time.
MAX_JSON_DEPTH = 32

# Bidirectional overrides and isolates reorder what surrounds them: in a name they make one person look like
# another (or a file name look harmless). The marks LRM/RLM and the joiners ZWJ/ZWNJ do no such thing and stay:
# emoji sequences, Persian and Indic scripts need the joiners.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Letters and symbols that render as nothing although Unicode does not class them as spaces or formats.
_BLANK_LOOKALIKES = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")
_INVISIBLE_CATEGORIES = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn", "Mn", "Me"})


def text_problem(value: str) -> str | None:
    """Why this text cannot be accepted anywhere (NUL, lone surrogate), or None."""
    if "\x00" in value:
        return "must not contain the NUL character"
    for char in value:
        if "\ud800" <= char <= "\udfff":
            return "must not contain a lone surrogate (text must be valid Unicode)"
    return None


def name_problem(value: str) -> str | None:
    """Why this name cannot be shown to others (bidi controls, nothing visible), or None. Empty or blank is left
    to the caller: some names are optional, and a blank one clears them."""
    if not value.strip():
        return None
    if any(char in BIDI_CONTROLS for char in value):
        return "must not contain bidirectional override or isolate characters"
    if all(_invisible(char) for char in value):
        return "must contain a visible character"
    return None


def _invisible(char: str) -> bool:
    return char in _BLANK_LOOKALIKES or unicodedata.category(char) in _INVISIBLE_CATEGORIES


# Control characters a message may hold: line breaks and tabs lay text out; every other C0/C1 control is invisible
# or rewrites the terminal or mail client showing it.
_LAYOUT_CONTROLS = frozenset("\n\r\t")


def message_problem(value: str) -> str | None:
    """Why this free text, shown to another person as written (a note, a message), cannot be accepted, or None:
    the rule of names (no bidi controls, something visible) plus no control characters but line breaks and tabs."""
    if problem := name_problem(value):
        return problem
    if any(unicodedata.category(char) == "Cc" and char not in _LAYOUT_CONTROLS for char in value):
        return "must not contain control characters (only line breaks and tabs)"
    return None


def check_message(value: str, field: str) -> str:
    """The message, or InvalidInput naming `field`."""
    problem = message_problem(value)
    if problem:
        raise InvalidInput(f"The {field.replace('_', ' ')} {problem}.", field=field)
    return value


def check_name(value: str, field: str) -> str:
    """The name, or InvalidInput naming `field`."""
    problem = name_problem(value)
    if problem:
        raise InvalidInput(f"The {field.replace('_', ' ')} {problem}.", field=field)
    return value


def nfc(value: str) -> str:
    return value if unicodedata.is_normalized("NFC", value) else unicodedata.normalize("NFC", value)


# --- walking JSON ---------------------------------------------------------------------------------------------


class TooDeep(ValueError):
    pass


class TooMany(ValueError):
    pass


# More JSON values (strings, numbers, items, keys) than this are refused before they are walked: no request of this
# API holds more than a few hundred, and an unbounded walk lets one 1 MiB body hold the event loop for seconds.
MAX_JSON_VALUES = 10_000


def _bad_strings(document: Any) -> list[tuple[str, str]]:
    """(field, problem) for every refused string in a parsed JSON value, keys included, in document order.
    Iterative, and bounded by MAX_JSON_DEPTH and MAX_JSON_VALUES (TooDeep, TooMany)."""
    problems: list[tuple[str, str]] = []
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    seen = 0
    while stack:
        value, path = stack.pop()
        seen += 1
        if seen > MAX_JSON_VALUES:
            raise TooMany()
        if len(path) > MAX_JSON_DEPTH:
            raise TooDeep(".".join(path))
        if isinstance(value, str):
            if problem := text_problem(value):
                problems.append((".".join(path) or "body", problem))
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                if problem := text_problem(key):
                    problems.append((".".join(path) or "body", f"has a key that {problem}"))
                else:
                    children.append((item, (*path, key)))
            stack.extend(reversed(children))
        elif isinstance(value, list):
            stack.extend(reversed([(item, (*path, str(index))) for index, item in enumerate(value)]))
    return problems


def _normalized(value: Any) -> Any:
    if isinstance(value, str):
        return nfc(value)
    if isinstance(value, dict):
        return {nfc(key): _normalized(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_normalized(item) for item in value]
    return value


class RefusedJson(ValueError):
    def __init__(self, detail: str, errors: list[dict[str, str]]) -> None:
        super().__init__(detail)
        self.detail, self.errors = detail, errors


def _whole_body_refused(detail: str) -> RefusedJson:
    # Like every 422, it names what is at fault in `errors` (the contract's shape): here, the body as a whole.
    return RefusedJson(detail, [{"field": "body", "message": detail}])


def _plainly_fine(body: bytes) -> bool:
    """True when the body cannot hold anything the policy refuses or changes, decided from the bytes alone (the
    common case, without parsing a second time before the service does). All ASCII: no raw lone surrogate and nothing
    to normalize; no `\\u` escape: no escaped NUL, surrogate or non-ASCII letter; no raw NUL; and fewer brackets
    than the depth limit, so it cannot nest too deep."""
    return (
        body.isascii()
        and b"\\u" not in body
        and b"\x00" not in body
        and body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH
    )


def _not_utf8() -> RefusedJson:
    return RefusedJson("The body is not JSON text in UTF-8.", [{"field": "body", "message": "Not UTF-8."}])


def _json_in_another_encoding(body: bytes) -> bool:
    """Whether the service's parser (json.loads of the bytes, as FastAPI's) would read the body as JSON in the
    UTF-16 or UTF-32 it guesses, where it is not JSON as UTF-8."""
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return False
    return True


def checked_json(body: bytes) -> bytes:
    """The body with its text in NFC, or RefusedJson (too deep, NUL, lone surrogate). A body that is not JSON
    passes unchanged: the service refuses it itself, naming the position."""
    if _plainly_fine(body):
        return body
    try:
        # Decoded here, not by json.loads: given bytes, it guesses UTF-16 or UTF-32 from the first bytes and reads
        # them too (RFC 8259: JSON exchanged between systems is UTF-8). A leading BOM is ignored, as it allows.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _not_utf8() from None
    try:
        document = json.loads(text) if text else None
    except RecursionError:
        raise _whole_body_refused(f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.")
    except ValueError:
        if _json_in_another_encoding(body):
            raise _not_utf8() from None  # e.g. UTF-16 without a BOM, which is also valid UTF-8 bytes
        return body
    try:
        problems = _bad_strings(document)
    except TooDeep:
        raise _whole_body_refused(f"The JSON is nested deeper than {MAX_JSON_DEPTH} levels.")
    except TooMany:
        raise _whole_body_refused(f"The JSON holds more than {MAX_JSON_VALUES:,} values.")
    if problems:
        errors = [{"field": field, "message": f"The text {problem}."} for field, problem in problems]
        raise RefusedJson("The request is not valid.", errors)
    normalized = _normalized(document)
    return body if normalized == document else json.dumps(normalized, ensure_ascii=False).encode()


# --- the middleware -------------------------------------------------------------------------------------------


class TextPolicy:
    """Pure ASGI middleware applying the text policy to path, query and JSON body before the service sees them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        errors = [*self._path_errors(scope), *self._query_errors(scope)]
        if errors:
            await send_problem(send, 422, "The request is not valid.", title="Invalid input", errors=errors)
            return
        scope = self._query_in_nfc(scope)
        if not _is_json(scope):
            await self.app(scope, receive, send)
            return
        body, stopped = await read_body(receive)
        if stopped is not None:  # the client went away while sending
            return
        try:
            body = checked_json(body)
        except RefusedJson as refused:
            await send_problem(send, 422, refused.detail, title="Invalid input", errors=refused.errors)
            return
        await self.app(_with_content_length(scope, len(body)), replay(body, receive), send)

    def _path_errors(self, scope: Scope) -> list[dict[str, str]]:
        path = _path_text(scope)
        if path.isascii() and "\x00" not in path:  # the usual path: no character-by-character look
            return []
        problem = _url_text_problem(path)
        if problem is None:
            return []
        return [{"field": field, "message": f"The text {problem}."} for field in _path_fields(scope, path)]

    def _query_errors(self, scope: Scope) -> list[dict[str, str]]:
        query: bytes = scope.get("query_string", b"")
        if b"%" not in query and b"\x00" not in query and query.isascii():
            return []  # nothing escaped, nothing outside ASCII: no NUL and no surrogate can be in it
        raw = query.decode("latin-1")
        errors = []
        # surrogateescape, not parse_qsl's default "replace": bytes that are not UTF-8 must be refused, not
        # handed on as U+FFFD.
        for name, value in urllib.parse.parse_qsl(raw, keep_blank_values=True, errors="surrogateescape"):
            in_name = _url_text_problem(name)
            if problem := in_name or _url_text_problem(value):
                errors.append({"field": "query" if in_name else name, "message": f"The text {problem}."})
        return errors

    def _query_in_nfc(self, scope: Scope) -> Scope:
        raw = scope.get("query_string", b"")
        if not raw or (raw.isascii() and b"%" not in raw):
            return scope
        pairs = urllib.parse.parse_qsl(raw.decode("latin-1"), keep_blank_values=True)
        normalized = [(nfc(name), nfc(value)) for name, value in pairs]
        if normalized == pairs:
            return scope
        scope["query_string"] = urllib.parse.urlencode(normalized).encode("ascii")
        return scope


def _path_text(scope: Scope) -> str:
    """The path, decoded from the bytes the client sent with the bytes that are not UTF-8 kept as lone surrogates
    (surrogateescape), where the server decoded them into U+FFFD (`path`): so the policy sees and refuses them."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return str(scope["path"])
    raw = raw.split(b"?", 1)[0]  # some clients' raw_path holds the query too
    return urllib.parse.unquote_to_bytes(raw).decode("utf-8", "surrogateescape")


def _url_text_problem(value: str) -> str | None:
    """text_problem of text decoded from a URL with surrogateescape, where a lone surrogate can only be a byte that
    is not UTF-8 (UTF-8 encodes no surrogate, so %ED%A0%80 is not UTF-8 either)."""
    problem = text_problem(value)
    if problem is None or "\x00" in value:
        return problem
    return "must be UTF-8 (a percent-escape holds bytes that are not)"


def _path_fields(scope: Scope, path: str) -> list[str]:
    """The names of the path parameters that hold a refused character (routing done early, for this only)."""
    app = scope.get("app")
    for route in iter_route_contexts(getattr(app, "routes", [])):
        if not route.path:
            continue
        regex, _, _ = compile_path(route.path)
        if match := regex.match(path):
            named = [name for name, value in match.groupdict().items() if text_problem(value)]
            if named:
                return named
    return ["path"]


def _is_json(scope: Scope) -> bool:
    """Whether FastAPI will parse the body as JSON, decided exactly as it does (fastapi/routing.py): its media type
    parser forgives more than a plain comparison would (`application/json\\xa0` is JSON to it), and every body
    it parses must pass the policy."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return is_json_content_type(value.decode("latin-1"))
    return False  # FastAPI's strict content type: no Content-Type, no JSON


def _with_content_length(scope: Scope, length: int) -> Scope:
    # The scope is changed in place, not copied: outer middleware reads what routing adds to it (the matched
    # route, for metrics and traces per route).
    headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
    headers.append((b"content-length", str(length).encode()))
    scope["headers"] = headers
    return scope


__all__ = [
    "BIDI_CONTROLS",
    "MAX_JSON_DEPTH",
    "TextPolicy",
    "check_message",
    "check_name",
    "message_problem",
    "name_problem",
    "nfc",
    "text_problem",
]
