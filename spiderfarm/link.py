"""``Link``: one link a ``LinkExtractor`` found (Scrapy's ``scrapy.link.Link``)."""

from __future__ import annotations

__all__ = ["Link"]


class Link:
    """A link found on a page: its absolute ``url``, the ``text`` of its element,
    ``fragment`` (kept for Scrapy's signature; the extractor leaves it empty and keeps any
    ``#fragment`` in ``url``, as Scrapy's does) and whether its ``rel`` says ``nofollow``.
    """

    __slots__ = ("fragment", "nofollow", "text", "url")

    def __init__(self, url: str, text: str = "", fragment: str = "", nofollow: bool = False):
        if not isinstance(url, str):
            raise TypeError(f"Link urls must be str objects, got {type(url).__name__}")
        self.url = url
        self.text = text
        self.fragment = fragment
        self.nofollow = nofollow

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Link):
            return NotImplemented
        return (
            self.url == other.url
            and self.text == other.text
            and self.fragment == other.fragment
            and self.nofollow == other.nofollow
        )

    def __hash__(self) -> int:
        return hash((self.url, self.text, self.fragment, self.nofollow))

    def __repr__(self) -> str:
        return (
            f"Link(url={self.url!r}, text={self.text!r}, "
            f"fragment={self.fragment!r}, nofollow={self.nofollow!r})"
        )
