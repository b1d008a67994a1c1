"""``FormRequest``, ``FormRequest.from_response`` and ``JsonRequest`` (issue 13): Scrapy's
field rules on crafted forms, the wire form, and a real crawl that posts a form, submits
a GET form, follows with a method and body, and pages through a JSON API."""

from __future__ import annotations

import pickle
from pathlib import Path
from urllib.parse import parse_qs, unquote_to_bytes

import pytest

import spiderfarm
from spiderfarm import FormRequest, HtmlResponse, JsonRequest, Request, XmlResponse
from spiderfarm.http import FormRequest as HttpFormRequest
from spiderfarm.http import JsonRequest as HttpJsonRequest
from tests.farm import read_items, run_cli
from tests.sites import HITS, ThreadedSites
from tests.toolkit_site import API_ITEMS, make_toolkit_app

pytestmark = pytest.mark.timeout(180)

SPIDERS = Path(__file__).parent / "toolkit_spiders"
URL = "http://example.com/forms/page.html"


def page(body: str, url: str = URL, charset: str = "utf-8") -> HtmlResponse:
    headers = {"Content-Type": f"text/html; charset={charset}"}
    return HtmlResponse(url, 200, headers, body.encode(charset), Request(url))


def fields(request: Request, encoding: str = "utf-8") -> dict[str, list[str]]:
    """The submitted fields, from the body of a POST or the query of anything else."""
    raw = (request.body or b"") if request.method == "POST" else request.url.partition("?")[2]
    data = raw if isinstance(raw, bytes) else raw.encode()
    return parse_qs(unquote_to_bytes(data).decode(encoding), keep_blank_values=True)


def header(request: Request, name: str) -> str | None:
    return next((v for k, v in (request.headers or {}).items() if k.lower() == name.lower()), None)


# -- FormRequest ---------------------------------------------------------------------


def test_names_are_exported_where_scrapy_has_them() -> None:
    assert spiderfarm.FormRequest is HttpFormRequest is FormRequest
    assert spiderfarm.JsonRequest is HttpJsonRequest is JsonRequest
    assert issubclass(FormRequest, Request) and issubclass(JsonRequest, Request)


def test_formdata_posts_urlencoded_by_default() -> None:
    r = FormRequest("http://example.com/post", formdata={"name": "Jo Doe", "tags": ["a", "b"]})
    assert r.method == "POST"
    assert r.body == b"name=Jo+Doe&tags=a&tags=b"
    assert header(r, "Content-Type") == "application/x-www-form-urlencoded"


def test_formdata_with_get_replaces_the_query() -> None:
    r = FormRequest("http://example.com/s?old=1", method="GET", formdata=[("q", "ö"), ("p", "2")])
    assert r.method == "GET" and r.body is None
    assert r.url == "http://example.com/s?q=%C3%B6&p=2"
    assert header(r, "Content-Type") is None


def test_no_formdata_is_a_plain_request_and_headers_given_win() -> None:
    assert FormRequest("http://example.com/").method == "GET"
    r = FormRequest(
        "http://example.com/", formdata={"a": "1"}, headers={"content-type": "text/x-mine"}
    )
    assert r.headers == {"content-type": "text/x-mine"}
    with pytest.raises(TypeError, match="form field 'n': values must be str or bytes"):
        FormRequest("http://example.com/", formdata={"n": 2})  # as Scrapy: no ints


def test_form_requests_cross_processes_as_plain_requests() -> None:
    r = FormRequest("http://example.com/post", formdata={"a": "1"}, meta={"m": 1}, priority=3)
    wire = pickle.loads(pickle.dumps(r.to_wire()))
    back = Request.from_wire(wire)
    assert type(back) is Request
    assert (back.url, back.method, back.body, back.headers, back.meta, back.priority) == (
        "http://example.com/post",
        "POST",
        b"a=1",
        {"Content-Type": "application/x-www-form-urlencoded"},
        {"m": 1},
        3,
    )
    changed = r.replace(url="http://example.com/other")
    assert type(changed) is FormRequest and changed.body == b"a=1"


# -- FormRequest.from_response: which form ------------------------------------------

TWO_FORMS = """
<form action="post.php" method="POST"><input type="hidden" name="one" value="1">
  <input type="hidden" name="two" value="2"></form>
<form name="second" id="f2" action="post2.php" method="POST">
  <input type="hidden" name="three" value="3"><input type="hidden" name="four" value="4">
</form>"""


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, {"one": ["1"], "two": ["2"]}),
        ({"formname": "second"}, {"three": ["3"], "four": ["4"]}),
        ({"formname": "missing"}, {"one": ["1"], "two": ["2"]}),
        ({"formid": "f2"}, {"three": ["3"], "four": ["4"]}),
        ({"formname": "missing", "formid": "f2"}, {"three": ["3"], "four": ["4"]}),
        ({"formnumber": 1}, {"three": ["3"], "four": ["4"]}),
        ({"formxpath": "//form[@action='post.php']"}, {"one": ["1"], "two": ["2"]}),
        ({"formxpath": "//input[@name='four']"}, {"three": ["3"], "four": ["4"]}),
        ({"formcss": "input[name='four']"}, {"three": ["3"], "four": ["4"]}),
    ],
)
def test_choosing_the_form(kwargs: dict[str, object], expected: dict[str, list[str]]) -> None:
    r = FormRequest.from_response(page(TWO_FORMS), **kwargs)  # type: ignore[arg-type]
    assert r.method == "POST"
    assert fields(r) == expected


def test_no_such_form() -> None:
    with pytest.raises(ValueError, match=r"No <form> element found in <200 http://example\.com"):
        FormRequest.from_response(page("<html><p>none</p></html>"))
    with pytest.raises(IndexError, match="Form number 2 not found"):
        FormRequest.from_response(page(TWO_FORMS), formname="missing", formnumber=2)
    with pytest.raises(ValueError, match="No <form> element found with //p"):
        FormRequest.from_response(page(TWO_FORMS + "<p>x</p>"), formxpath="//p")
    with pytest.raises(ValueError, match="formdata should be a dict or iterable of tuples"):
        FormRequest.from_response(page(TWO_FORMS), formdata=("a",))  # type: ignore[arg-type]


# -- which fields ------------------------------------------------------------------


def test_select_fields() -> None:
    form = """<form>
    <select name="i1"><option value="i1v1">1</option><option value="i1v2" selected>2</option>
    </select>
    <select name="i2"><option value="i2v1">1</option><option value="i2v2">2</option></select>
    <select><option value="i3v1">nameless</option></select>
    <select name="i4" multiple><option value="i4v1">1</option>
      <option value="i4v2" selected>2</option><option value="i4v3" selected>3</option></select>
    <select name="i5" multiple><option value="i5v1">1</option></select>
    <select name="i6"></select>
    <select name="i7"><option>text only</option></select>
    </form>"""
    assert fields(FormRequest.from_response(page(form))) == {
        "i1": ["i1v2"],  # the selected option
        "i2": ["i2v1"],  # none selected: the first, as a browser submits
        "i4": ["i4v2", "i4v3"],  # every selected option of a multiple select
        "i7": ["text only"],  # an option without a value submits its text
    }


def test_checkboxes_radios_and_text_inputs() -> None:
    form = """<form>
    <input type="checkbox" name="c1" value="c1v1">
    <input type="checkbox" name="c1" value="c1v2" checked>
    <input type="checkbox" name="c2" checked><input type="checkbox" name="c3" value="no">
    <input type="radio" name="r1" value="r1v1"><input type="radio" name="r1" value="r1v2" checked>
    <input type="text" name="t1" value="t1v"><input type="text" name="t2"><input value="nameless">
    <input name="untyped" value="u"><input type="hidden" name="h" value="hv">
    <input type="reset" name="reset"><input type="image" name="img" value="iv">
    <textarea name="ta">line 1
line 2</textarea><textarea name="ta2"></textarea>
    </form>"""
    assert fields(FormRequest.from_response(page(form), dont_click=True)) == {
        "c1": ["c1v2"],
        "c2": ["on"],  # a checked box without a value submits "on"
        "r1": ["r1v2"],
        "t1": ["t1v"],
        "t2": [""],
        "untyped": ["u"],
        "h": ["hv"],
        "ta": ["line 1\nline 2"],
        "ta2": [""],
    }


def test_fields_in_nested_elements_count() -> None:
    form = """<form><div><fieldset><input name="a" value="1"></fieldset></div>
    <table><tr><td><input name="b" value="2"></td></tr></table></form>"""
    assert fields(FormRequest.from_response(page(form))) == {"a": ["1"], "b": ["2"]}


def test_formdata_overrides_adds_and_removes() -> None:
    form = '<form method="post"><input name="a" value="1"><input name="b" value="2"></form>'
    r = FormRequest.from_response(page(form), formdata={"a": "x", "b": None, "c": ["3", "4"]})
    assert r.body == b"a=x&c=3&c=4"


# -- the clicked button --------------------------------------------------------------

BUTTONS = """<form action="get.php" method="GET">
<input type="submit" name="go" value="first"><input type="hidden" name="h" value="1">
<input type="submit" name="go" value="second"><button name="b" value="bv">B</button>
<button type="button" name="plain" value="never">not a submit</button></form>"""


def test_the_first_submit_button_is_clicked() -> None:
    assert fields(FormRequest.from_response(page(BUTTONS))) == {"go": ["first"], "h": ["1"]}


def test_clickdata_chooses_the_button() -> None:
    by_value = FormRequest.from_response(page(BUTTONS), clickdata={"value": "second"})
    assert fields(by_value) == {"h": ["1"], "go": ["second"]}
    by_two = FormRequest.from_response(page(BUTTONS), clickdata={"name": "b", "value": "bv"})
    assert fields(by_two) == {"h": ["1"], "b": ["bv"]}
    # "nr" counts the form's inputs (Scrapy's rule): input 2 is the second submit.
    assert fields(FormRequest.from_response(page(BUTTONS), clickdata={"nr": 2}))["go"] == ["second"]
    quoted = FormRequest.from_response(
        page('<form><input type="submit" name="q" value="it\'s &quot;x&quot;"></form>'),
        clickdata={"value": 'it\'s "x"'},
    )
    assert fields(quoted) == {"q": ['it\'s "x"']}


def test_clickdata_errors_and_dont_click() -> None:
    with pytest.raises(ValueError, match=r"Multiple elements found .* matching the criteria"):
        FormRequest.from_response(page(BUTTONS), clickdata={"name": "go"})
    with pytest.raises(ValueError, match="No clickable element matching clickdata"):
        FormRequest.from_response(page(BUTTONS), clickdata={"name": "absent"})
    with pytest.raises(ValueError, match="No clickable element matching clickdata"):
        FormRequest.from_response(page(BUTTONS), clickdata={"nr": 10})
    assert fields(FormRequest.from_response(page(BUTTONS), dont_click=True)) == {"h": ["1"]}
    # A button named in formdata takes formdata's value.
    overridden = FormRequest.from_response(
        page(BUTTONS), formdata={"go": "mine"}, clickdata={"value": "second"}
    )
    assert fields(overridden) == {"h": ["1"], "go": ["mine"]}


def test_image_and_valueless_buttons_are_clickable() -> None:
    form = '<form><input name="t" value="1"><input type="image" name="i" value="iv"></form>'
    assert fields(FormRequest.from_response(page(form))) == {"t": ["1"], "i": ["iv"]}
    form = '<form method="post"><button type="submit" name="b">Send</button></form>'
    assert FormRequest.from_response(page(form)).body == b"b="


# -- URL, method, encoding -----------------------------------------------------------


@pytest.mark.parametrize(
    ("form_method", "method"), [("post", "POST"), ("GET", "GET"), ("PUT", "GET"), ("", "GET")]
)
def test_the_method_is_get_unless_post(form_method: str, method: str) -> None:
    r = FormRequest.from_response(
        page(f'<form method="{form_method}"><input name="a" value="1"></form>')
    )
    assert r.method == method
    assert (r.body == b"a=1") if method == "POST" else r.url.endswith("?a=1")


def test_action_base_and_overrides() -> None:
    assert FormRequest.from_response(page("<form></form>")).url == URL
    spaced = FormRequest.from_response(page('<form action=" ../do\n"></form>'))
    assert spaced.url == "http://example.com/do"
    based = page('<html><head><base href=" http://b.test/x/"></head><form action="go"></form>')
    assert FormRequest.from_response(based).url == "http://b.test/x/go"
    r = FormRequest.from_response(
        page('<form action="/a" method="post"><input name="k" value="v"></form>'),
        url="/elsewhere",
        method="GET",
        callback="parse",
        meta={"m": True},
    )
    assert (r.url, r.method, r.callback, r.meta) == (
        "http://example.com/elsewhere?k=v",
        "GET",
        "parse",
        {"m": True},
    )


def test_the_page_encoding_encodes_the_fields() -> None:
    form = '<form method="post"><input name="price" value="£ 10"></form>'
    r = FormRequest.from_response(page(form, charset="latin-1"), formdata={"who": "é"})
    assert r.body == b"price=%A3+10&who=%E9"


def test_a_form_in_xhtml_served_as_xml() -> None:
    body = (
        b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body>'
        b'<form action="/x" method="post"><input name="a" value="1"/>'
        b'<input type="checkbox" name="c" value="y" checked="checked"/></form></body></html>'
    )
    response = XmlResponse(URL, 200, {"Content-Type": "application/xhtml+xml"}, body, Request(URL))
    r = FormRequest.from_response(response)
    assert (r.url, r.body) == ("http://example.com/x", b"a=1&c=y")


# -- JsonRequest ---------------------------------------------------------------------


def test_json_request_data_headers_and_method() -> None:
    r = JsonRequest("http://example.com/api", data={"b": 1, "a": [1, 2]})
    assert r.method == "POST"
    assert r.body == b'{"a": [1, 2], "b": 1}'  # sort_keys=True by default
    assert header(r, "Content-Type") == "application/json"
    assert header(r, "Accept") == "application/json, text/javascript, */*; q=0.01"
    assert JsonRequest("http://example.com/api").method == "GET"
    assert JsonRequest("http://example.com/api", data=[]).method == "POST"
    get = JsonRequest("http://example.com/api", data={"a": 1}, method="GET")
    assert (get.method, get.body) == ("GET", b'{"a": 1}')
    compact = JsonRequest(
        "http://example.com/api",
        data={"b": 1, "a": 2},
        dumps_kwargs={"separators": (",", ":"), "sort_keys": False},
    )
    assert compact.body == b'{"b":1,"a":2}'
    assert compact.dumps_kwargs == {"separators": (",", ":"), "sort_keys": False}
    mine = JsonRequest("http://example.com/api", data={}, headers={"accept": "text/json"})
    assert mine.headers == {"accept": "text/json", "Content-Type": "application/json"}


def test_json_request_body_wins_over_data_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="Both body and data passed. data will be ignored"):
        r = JsonRequest("http://example.com/api", body=b"raw", data={"a": 1})
    assert (r.method, r.body) == ("GET", b"raw")


def test_json_request_replace_and_wire() -> None:
    r = JsonRequest("http://example.com/api", data={"page": 1}, callback="parse")
    nxt = r.replace(data={"page": 2})
    assert type(nxt) is JsonRequest and nxt.body == b'{"page": 2}' and nxt.callback == "parse"
    back = Request.from_wire(pickle.loads(pickle.dumps(nxt.to_wire())))
    assert type(back) is Request
    assert (back.method, back.body, header(back, "Content-Type")) == (
        "POST",
        b'{"page": 2}',
        "application/json",
    )


def test_response_follow_takes_method_and_body() -> None:
    response = page('<a href="/next">n</a>')
    r = response.follow(
        response.css("a")[0], method="PUT", body="data", headers={"X-A": "1"}, priority=2
    )
    assert (r.url, r.method, r.body, r.headers, r.priority) == (
        "http://example.com/next",
        "PUT",
        b"data",
        {"X-A": "1"},
        2,
    )
    posts = list(response.follow_all(css="a", method="POST", body=b"x"))
    assert [(p.url, p.method, p.body) for p in posts] == [("http://example.com/next", "POST", b"x")]


# -- a real crawl --------------------------------------------------------------------


def test_forms_and_a_json_api_through_the_farm(tmp_path: Path) -> None:
    """The ``forms_api`` spider on the toolkit site with two workers: a login form posted
    with ``from_response`` (hidden token, selected option, checked box, clickdata, a field
    removed), a GET search form (multiple select, a <button>), ``response.follow`` with
    PUT and a body, and a JSON API paged with ``JsonRequest``; items are attrs and
    pydantic objects."""
    out = tmp_path / "forms.jsonl"
    with ThreadedSites(make_toolkit_app()) as (site,):
        result = run_cli(
            ["crawl", "forms_api", "--spiders-dir", str(SPIDERS), "--workers", "2",
             "-a", f"base={site.url()}", "-o", str(out)]
        )  # fmt: skip
        hits = [path for path, _, _ in site.app[HITS]]
    assert result.returncode == 0, result.stdout + result.stderr
    assert "crawl finished: 8 pages, 26 items, 0 errors" in result.stdout
    items = read_items(out)
    echoes = {item["kind"]: item for item in items if "kind" in item}
    assert echoes["login"] == {
        "kind": "login",
        "method": "POST",
        "path": "/echo",
        "query": [["from", "login"]],
        "form": [
            ["csrf", "t0k&en"],
            ["lang", "fr"],
            ["remember", "yes"],
            ["action", "Register"],
            ["user", "ann"],
            ["password", "s3cr\u00e9t"],
        ],
        "content_type": "application/x-www-form-urlencoded",
        "body": "csrf=t0k%26en&lang=fr&remember=yes&action=Register&user=ann&password=s3cr%C3%A9t",
    }
    assert echoes["search"]["method"] == "GET"
    assert echoes["search"]["query"] == [
        ["page", "1"], ["sort", "price"], ["sort", "date"], ["go", "search"], ["q", "red shoes"],
    ]  # fmt: skip
    assert (echoes["follow"]["method"], echoes["follow"]["body"]) == ("PUT", "raw body")
    assert echoes["follow"]["content_type"] == "text/plain"
    api = sorted((item for item in items if "id" in item), key=lambda i: int(str(i["id"])))
    assert api == [
        {"id": n, "name": f"item {n}", "page": (n - 1) // 10 + 1} for n in range(1, API_ITEMS + 1)
    ]
    assert list(api[0]) == ["id", "name", "page"]  # the pydantic model's field order
    assert hits.count("/api/items") == 3
