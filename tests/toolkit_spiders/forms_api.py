"""Forms and a JSON API on the toolkit site: FormRequest.from_response (POST and GET),
response.follow with a method and body, and a JsonRequest chain. Its items are attrs
and pydantic objects."""

import attrs
import pydantic

from spiderfarm import FormRequest, JsonRequest, Request, Spider


@attrs.define
class Echo:
    kind: str
    method: str
    path: str
    query: list
    form: list
    content_type: str
    body: str


class ApiItem(pydantic.BaseModel):
    id: int
    name: str
    page: int


class FormsApiSpider(Spider):
    name = "forms_api"
    base = "http://127.0.0.1:8000/"

    def start_requests(self):
        yield Request(self.base + "form", callback=self.parse_form)
        yield Request(self.base + "search", callback=self.parse_search)
        yield JsonRequest(self.base + "api/items", data={"page": 1}, callback=self.parse_api)

    def parse_form(self, response):
        yield FormRequest.from_response(
            response,
            formname="login",
            formdata={"user": "ann", "password": "s3cr\u00e9t", "note": None},
            clickdata={"value": "Register"},
            callback=self.echoed,
            cb_kwargs={"kind": "login"},
        )

    def parse_search(self, response):
        yield FormRequest.from_response(
            response,
            formdata={"q": "red shoes"},
            callback=self.echoed,
            cb_kwargs={"kind": "search"},
        )
        yield response.follow(
            "/echo?via=follow",
            method="PUT",
            body="raw body",
            headers={"Content-Type": "text/plain"},
            callback=self.echoed,
            cb_kwargs={"kind": "follow"},
        )

    def echoed(self, response, kind):
        data = response.json()
        yield Echo(kind=kind, **data)

    def parse_api(self, response):
        data = response.json()
        for item in data["items"]:
            yield ApiItem(page=data["page"], **item)
        if data["next"]:
            yield JsonRequest(
                self.base + "api/items", data={"page": data["next"]}, callback=self.parse_api
            )
