"""``Request`` and the responses: what spiders create and what their callbacks receive.

The names live in ``spiderfarm.request``, ``spiderfarm.forms`` (``FormRequest``,
``JsonRequest``) and ``spiderfarm.response``; this module gathers
them, as ``scrapy.http`` does, so ``from spiderfarm.http import Request, Response`` works.
"""

from __future__ import annotations

from .forms import FormRequest, JsonRequest
from .protocol import W_CALLBACK, W_DEPTH, W_DONT_FILTER, W_PRIORITY, W_URL, WireRequest
from .request import InvalidRequest, Request, current_spider
from .response import (
    HtmlResponse,
    JsonResponse,
    Response,
    TextResponse,
    XmlResponse,
    response_for,
)

__all__ = [
    "W_CALLBACK",
    "W_DEPTH",
    "W_DONT_FILTER",
    "W_PRIORITY",
    "W_URL",
    "FormRequest",
    "HtmlResponse",
    "InvalidRequest",
    "JsonRequest",
    "JsonResponse",
    "Request",
    "Response",
    "TextResponse",
    "WireRequest",
    "XmlResponse",
    "current_spider",
    "response_for",
]
