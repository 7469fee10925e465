"""What a request body may hold, for both APIs: numbers that are numbers (a bool or a string is not
one; a float is a whole number only when integral), finite, in a range; and the JSON body itself
parsed with bounds (UTF-8, no NaN or Infinity, a nesting depth) by the routes' `BoundedRoute`.
Every refusal is a 4xx with one line naming the field (or the body) and the rule."""

from __future__ import annotations

import json
import math
from typing import Annotated

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from pydantic import BeforeValidator, Field
from pydantic_core import PydanticCustomError

from latentdiff.errors import UsageError
from latentdiff.runtime.reading import check_depth

MAX_DIGITS = 40  # a JSON integer longer than this is no value of ours (seeds: 19 digits)


def _shown(v) -> str:
    text = json.dumps(v) if isinstance(v, (bool, str, type(None))) else repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _whole(v):
    if v is None:
        return v
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    if isinstance(v, bool) or not isinstance(v, int):
        raise PydanticCustomError("whole_number", "must be a whole number, got {v}", {"v": _shown(v)})
    return v


def _real(v):
    if v is None:
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PydanticCustomError("finite_number", "must be a finite number, got {v}", {"v": _shown(v)})
    return v


def _flag(v):
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):  # A1111 clients send 0/1 for some of its booleans
        return bool(v)
    raise PydanticCustomError("flag", "must be true or false, got {v}", {"v": _shown(v)})


def whole(lo: int, hi: int, optional: bool = False):
    """An int field type in [lo, hi]; `optional`: null too."""
    inner = Annotated[int, Field(ge=lo, le=hi)]
    return Annotated[inner | None if optional else inner, BeforeValidator(_whole)]


def real(lo: float, hi: float, optional: bool = False, above: bool = False):
    """A finite float field type in [lo, hi] ((lo, hi] with `above`); `optional`: null too."""
    low = {"gt": lo} if above else {"ge": lo}
    inner = Annotated[float, Field(le=hi, **low)]
    return Annotated[inner | None if optional else inner, BeforeValidator(_real)]


Flag = Annotated[bool, BeforeValidator(_flag)]


# ---- the body ----------------------------------------------------------------------------------
def parse_body(data: bytes):
    """A request body as JSON: UTF-8, nesting at most runtime.reading.MAX_DEPTH deep, numbers
    finite and of at most MAX_DIGITS digits. A UsageError names what is wrong."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"request body is not UTF-8 (byte {e.start} is 0x{data[e.start]:02x})") from None
    check_depth(text, "request body")
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite, parse_int=_int)
    except json.JSONDecodeError as e:
        raise UsageError(f"request body is not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise UsageError("request body nests too deep") from None


def _no_constant(name: str):
    raise UsageError(f"request body holds {name}, which is not a JSON number; send a finite number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise UsageError(f"request body holds the number {text[:40]}, which is not finite as a float")
    return value


def _int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_DIGITS:
        raise UsageError(f"request body holds a number of {digits} digits; at most {MAX_DIGITS} are read")
    return int(text)


class _BoundedRequest(Request):
    async def json(self):
        if not hasattr(self, "_json"):
            try:
                self._json = parse_body(await self.body())
            except UsageError as e:
                raise HTTPException(422, str(e)) from None
        return self._json


class BoundedRoute(APIRoute):
    """A route whose JSON body is read by `parse_body` (FastAPI's own reading accepts NaN, any
    depth up to a RecursionError, and answers a vague 400 for bytes that are not UTF-8)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def bounded(request: Request):
            return await handler(_BoundedRequest(request.scope, request.receive))

        return bounded
