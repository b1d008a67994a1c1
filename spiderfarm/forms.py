"""``FormRequest`` (with ``from_response``) and ``JsonRequest``: Scrapy's requests that
build their body (or query) from form fields or JSON data.

Both are ``Request`` subclasses only where they are made: their ``to_wire()`` is a plain
``Request``'s, so they cross processes, and are fetched, as plain data.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeAlias, cast
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

from parsel.csstranslator import HTMLTranslator
from w3lib.html import strip_html5_whitespace

from .request import InvalidRequest, Request
from .response import Response, XmlResponse
from .selector import Selector
from .urls import safe_url

__all__ = ["FormRequest", "JsonRequest"]

FormdataValue: TypeAlias = str | Iterable[str]
FormdataPairs: TypeAlias = Iterable[tuple[str, FormdataValue]]
Formdata: TypeAlias = Mapping[str, FormdataValue] | FormdataPairs | None

_REGEXP_NS = {"re": "http://exslt.org/regular-expressions"}
# What a browser submits: textareas, selects, and inputs other than buttons, with
# checkboxes and radio buttons only when checked (Scrapy's expression).
_INPUTS_XPATH = (
    "descendant::textarea"
    "|descendant::select"
    "|descendant::input[not(@type) or @type["
    ' not(re:test(., "^(?:submit|image|reset)$", "i"))'
    " and (../@checked or"
    '  not(re:test(., "^(?:checkbox|radio)$", "i")))]]'
)
_CLICKABLES_XPATH = (
    'descendant::input[re:test(@type, "^(submit|image)$", "i")]'
    '|descendant::button[not(@type) or re:test(@type, "^submit$", "i")]'
)
_ATTRIBUTE_NAME = re.compile(r"[A-Za-z_][\w.\-]*\Z")


def _set_default_header(request: Request, name: str, value: str) -> None:
    headers = request.headers or {}
    if not any(k.lower() == name.lower() for k in headers):
        request.headers = {**headers, name: value}


def _to_bytes(value: Any, encoding: str, field: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode(encoding, "xmlcharrefreplace")
    raise TypeError(
        f"form field {field!r}: values must be str or bytes (or lists of them), "
        f"got {type(value).__name__} {value!r:.40}"
    )


def _urlencode(pairs: FormdataPairs, encoding: str) -> str:
    values = [
        (_to_bytes(k, encoding, str(k)), _to_bytes(v, encoding, str(k)))
        for k, vs in pairs
        for v in (vs if hasattr(vs, "__iter__") and not isinstance(vs, str | bytes) else [vs])
    ]
    return urlencode(values, doseq=True)


class FormRequest(Request):
    """A ``Request`` whose ``formdata`` (a dict, or ``(name, value)`` pairs; a value may
    be a list) is URL-encoded into the body (``POST``, the method when ``formdata`` is
    given and ``method`` is not; ``Content-Type: application/x-www-form-urlencoded``) or,
    for any other method, replaces the URL's query. Text is encoded in ``encoding``
    (UTF-8; ``from_response`` uses the page's)."""

    __slots__ = ()

    valid_form_methods: ClassVar[list[str]] = ["GET", "POST"]

    def __init__(
        self, *args: Any, formdata: Formdata = None, encoding: str = "utf-8", **kwargs: Any
    ) -> None:
        if formdata and kwargs.get("method") is None:
            kwargs["method"] = "POST"
        elif kwargs.get("method") is None:
            kwargs.pop("method", None)
        super().__init__(*args, **kwargs)
        if not formdata:
            return
        pairs = formdata.items() if isinstance(formdata, Mapping) else formdata
        query = _urlencode(pairs, encoding)
        if self.method == "POST":
            _set_default_header(self, "Content-Type", "application/x-www-form-urlencoded")
            self.body = query.encode("ascii") or None
        else:
            try:
                self.url = safe_url(urlunsplit(urlsplit(self.url)._replace(query=query)))
            except ValueError as exc:
                raise InvalidRequest(str(exc)) from None

    @classmethod
    def from_response(
        cls,
        response: Response,
        formname: str | None = None,
        formid: str | None = None,
        formnumber: int = 0,
        formdata: Formdata = None,
        clickdata: dict[str, str | int] | None = None,
        dont_click: bool = False,
        formxpath: str | None = None,
        formcss: str | None = None,
        **kwargs: Any,
    ) -> FormRequest:
        """The request a browser would send submitting a ``<form>`` of ``response``.

        The form is the first named ``formname``, else with id ``formid``, else the
        first holding what ``formxpath`` or ``formcss`` selects, else number
        ``formnumber``. Its fields are what a browser submits (textareas, selects —
        a single select without a selected option gives its first option — and inputs,
        checkboxes and radios only when checked); ``formdata`` overrides them (a value
        of ``None`` removes a field). Unless ``dont_click``, the first submit button
        (or the one ``clickdata`` describes: ``{"name": ..., "value": ...}`` attributes,
        or ``{"nr": N}``) is added as clicked. The URL is the form's ``action`` (or
        ``url=``) joined to the page's base URL; the method the form's (or
        ``method=``), ``GET`` unless it is ``POST``; other keywords go to ``Request``.

        Raises:
            ValueError: no such form, or ``clickdata`` matches no element or several.
            IndexError: there is no form number ``formnumber``.
        """
        kwargs.setdefault("encoding", response.encoding)
        if formcss is not None:
            formxpath = HTMLTranslator().css_to_xpath(formcss)
        form = _get_form(response, formname, formid, formnumber, formxpath)
        pairs = _get_inputs(form, formdata, dont_click, clickdata)
        url = _get_form_url(form, response.base_url, kwargs.pop("url", None))
        method = kwargs.pop("method", form.method)
        if method is not None:
            method = method.upper()
            if method not in cls.valid_form_methods:
                method = "GET"
        return cls(url=url, method=method, formdata=pairs, **kwargs)


def _html_root(response: Response) -> Any:
    """The page's tree as lxml.html elements (forms, inputs and their values)."""
    if isinstance(response, XmlResponse):  # XHTML served as XML: parse it as a browser would
        return Selector(text=response.text, type="html", base_url=response.url).root
    return response.selector.root


def _get_form(
    response: Response,
    formname: str | None,
    formid: str | None,
    formnumber: int,
    formxpath: str | None,
) -> Any:
    root = _html_root(response)
    forms = root.xpath("//form")
    if not forms:
        raise ValueError(f"No <form> element found in {response}")
    if formname is not None:
        found = root.xpath("//form[@name=$name]", name=formname)
        if found:
            return found[0]
    if formid is not None:
        found = root.xpath("//form[@id=$id]", id=formid)
        if found:
            return found[0]
    if formxpath is not None:
        nodes = root.xpath(formxpath)
        if nodes:
            el = nodes[0]
            while el is not None and hasattr(el, "tag"):
                if el.tag == "form":
                    return el
                el = el.getparent()
        raise ValueError(f"No <form> element found with {formxpath}")
    try:
        return forms[formnumber]
    except IndexError:
        raise IndexError(f"Form number {formnumber} not found in {response}") from None


def _get_form_url(form: Any, base_url: str, url: str | None) -> str:
    if url is None:
        action = form.get("action")
        if action is None:
            return base_url
        return urljoin(base_url, strip_html5_whitespace(action))
    return urljoin(base_url, url)


def _get_inputs(
    form: Any,
    formdata: Formdata,
    dont_click: bool,
    clickdata: dict[str, str | int] | None,
) -> list[tuple[str, FormdataValue]]:
    try:
        formdata_keys = dict(formdata or ()).keys()
    except (ValueError, TypeError):
        raise ValueError("formdata should be a dict or iterable of tuples") from None
    if not formdata:
        formdata = []
    inputs = form.xpath(_INPUTS_XPATH, namespaces=_REGEXP_NS)
    values: list[tuple[str, FormdataValue]] = [
        (k, "" if v is None else v)
        for k, v in (_value(e) for e in inputs)
        if k and k not in formdata_keys
    ]
    if not dont_click:
        clickable = _get_clickable(clickdata, form)
        # As Scrapy: a clicked button named in a formdata dict is left to formdata.
        if clickable and clickable[0] is not None and clickable[0] not in formdata:
            values.append(cast("tuple[str, str]", clickable))
    pairs = formdata.items() if isinstance(formdata, Mapping) else formdata
    values.extend((k, v) for k, v in pairs if v is not None)
    return values


def _value(el: Any) -> tuple[str | None, Any]:
    name, value = el.name, el.value
    if el.tag == "select" and value is None and not el.multiple:
        # A browser submits a single select's first option when none is selected, and
        # nothing for a select without options.
        options = el.value_options
        return (name, options[0]) if options else (None, None)
    return name, value


def _get_clickable(clickdata: dict[str, str | int] | None, form: Any) -> tuple[Any, str] | None:
    clickables = list(form.xpath(_CLICKABLES_XPATH, namespaces=_REGEXP_NS))
    if not clickables:
        return None
    if clickdata is None:
        el = clickables[0]
        return (el.get("name"), el.get("value") or "")
    nr = clickdata.get("nr")
    if nr is not None:
        if not isinstance(nr, int):
            raise ValueError(f"clickdata 'nr' must be an int, got {nr!r}")
        try:
            el = list(form.inputs)[nr]
        except IndexError:
            pass
        else:
            return (el.get("name"), el.get("value") or "")
    # Attributes to match, as XPath variables (a quote in a value cannot break out).
    tests, variables = [], {}
    for i, (key, value) in enumerate(clickdata.items()):
        if not _ATTRIBUTE_NAME.match(key):
            raise ValueError(f"clickdata key {key!r} is not an attribute name")
        tests.append(f"[@{key}=$v{i}]")
        variables[f"v{i}"] = str(value)
    found = form.xpath(".//*" + "".join(tests), **variables)
    if len(found) == 1:
        return (found[0].get("name"), found[0].get("value") or "")
    if len(found) > 1:
        raise ValueError(
            f"Multiple elements found ({found!r}) matching the criteria in clickdata: {clickdata!r}"
        )
    raise ValueError(f"No clickable element matching clickdata: {clickdata!r}")


class JsonRequest(Request):
    """A ``Request`` whose ``data`` is sent as its JSON body (``json.dumps(data,
    **dumps_kwargs)``, ``sort_keys=True`` unless told otherwise); ``POST`` when ``data``
    is given and ``method`` is not. Sets ``Content-Type: application/json`` and
    ``Accept: application/json, text/javascript, */*; q=0.01`` unless given."""

    __slots__ = ("_dumps_kwargs",)

    def __init__(
        self, *args: Any, dumps_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        dumps_kwargs = copy.deepcopy(dumps_kwargs) if dumps_kwargs is not None else {}
        dumps_kwargs.setdefault("sort_keys", True)
        self._dumps_kwargs = dumps_kwargs
        body_passed = kwargs.get("body") is not None
        data = kwargs.pop("data", None)
        if body_passed and data is not None:
            warnings.warn("Both body and data passed. data will be ignored", stacklevel=2)
        elif not body_passed and data is not None:
            kwargs["body"] = self._dumps(data)
            kwargs.setdefault("method", "POST")
        super().__init__(*args, **kwargs)
        _set_default_header(self, "Content-Type", "application/json")
        _set_default_header(self, "Accept", "application/json, text/javascript, */*; q=0.01")

    @property
    def dumps_kwargs(self) -> dict[str, Any]:
        return self._dumps_kwargs

    def _dumps(self, data: Any) -> str:
        return json.dumps(data, **self._dumps_kwargs)

    def replace(self, **changes: Any) -> Request:
        """A copy with some arguments changed; ``data=`` gives a new JSON body."""
        data = changes.pop("data", None)
        if data is not None and changes.get("body") is not None:
            warnings.warn("Both body and data passed. data will be ignored", stacklevel=2)
        elif data is not None:
            changes["body"] = self._dumps(data)
        changes.setdefault("dumps_kwargs", self._dumps_kwargs)
        return super().replace(**changes)
