"""Logs in with FormRequest.from_response (CSRF token, cookies), then crawls the members
pages. ``-a users=ann,bob -a jars=1``: one login and one cookiejar per user; ``-a
delay=S``: each members page takes S seconds."""

import os

from spiderfarm import FormRequest, Request, Spider

PASSWORDS = {"ann": "s3cret-ann", "bob": "s3cret-bob"}


class MembersSpider(Spider):
    name = "members"
    base = "http://127.0.0.1:8000"
    users = "ann"
    jars = ""
    delay = "0"

    def _meta(self, user):
        return {"cookiejar": user} if self.jars else {}

    def start_requests(self):
        for user in self.users.split(","):
            yield Request(
                self.base + "/login", callback=self.login, cb_kwargs={"user": user},
                meta=self._meta(user), dont_filter=True,
            )

    def login(self, response, user):
        yield FormRequest.from_response(
            response, formname="login", formdata={"user": user, "password": PASSWORDS[user]},
            callback=self.members, cb_kwargs={"user": user}, meta=self._meta(user),
            headers={"X-Worker-Pid": str(os.getpid())}, dont_filter=True,
        )

    def members(self, response, user):
        assert response.url.endswith("/members/"), response.url
        query = f"?as={user}&delay={self.delay}"
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href + query, callback=self.page, meta=self._meta(user))

    def page(self, response):
        yield {
            "user": response.css("#user::text").get(),
            "n": int(response.css("#n::text").get()),
            "jar": response.meta.get("cookiejar"),
            "as": response.url.partition("as=")[2].partition("&")[0],
        }
