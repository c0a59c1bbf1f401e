"""Hostile HTML mail made harmless: nh3 (ammonia) with a mail-reading policy, and the CSPs.

Three layers, each enough on its own for the common attacks:
1. `clean_html` keeps formatting tags only; scripts, styles, forms, frames, SVG, `<meta>`
   and `<base>` go (script/style with their content); event handlers and `javascript:`
   URLs are dropped by nh3; images keep only `data:` and `cid:` sources (no remote
   beacons); `style` attributes keep a list of properties none of which takes a URL,
   and a style holding `url(`, `expression(`, `@import` or a CSS escape is dropped whole.
2. The page is shown in `<iframe sandbox>` without `allow-scripts`/`allow-same-origin`.
3. The frame's document comes with `FRAME_CSP` (nothing may load except inline styles
   and data:/cid: images; `sandbox` again), the other pages with `PAGE_CSP`.
"""

from __future__ import annotations

import re

import nh3

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data: cid:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'self'; sandbox"
)

_TAGS = set(nh3.ALLOWED_TAGS) | {"font"}
_CONTENT_DROPPED = {"script", "style", "title", "noscript", "template", "xmp", "noembed"}
_ATTRS: dict[str, set[str]] = {k: set(v) for k, v in nh3.ALLOWED_ATTRIBUTES.items()}
for tag in ("table", "td", "th", "tr", "tbody", "thead", "div", "p", "span", "body"):
    _ATTRS.setdefault(tag, set()).update({"align", "valign", "width", "height", "bgcolor"})
_ATTRS.setdefault("table", set()).update({"border", "cellpadding", "cellspacing"})
_ATTRS.setdefault("font", set()).update({"color", "face", "size"})
_ATTRS.setdefault("*", set()).update({"style", "dir", "lang", "title"})
_ATTRS["a"] = {"href", "title"}

#: CSS properties kept in style attributes: none of them accepts a URL.
_STYLE_PROPERTIES = {
    "color",
    "background-color",
    "font",
    "font-family",
    "font-size",
    "font-style",
    "font-weight",
    "text-align",
    "text-decoration",
    "text-indent",
    "text-transform",
    "line-height",
    "letter-spacing",
    "white-space",
    "vertical-align",
    "width",
    "max-width",
    "min-width",
    "height",
    "margin",
    "margin-top",
    "margin-right",
    "margin-bottom",
    "margin-left",
    "padding",
    "padding-top",
    "padding-right",
    "padding-bottom",
    "padding-left",
    "border",
    "border-top",
    "border-right",
    "border-bottom",
    "border-left",
    "border-color",
    "border-style",
    "border-width",
    "border-collapse",
    "border-spacing",
    "display",
    "direction",
}
_BAD_STYLE = re.compile(r"url\s*\(|expression\s*\(|@import|\\|image-set|-moz-binding", re.I)
_SAFE_SRC = ("data:image/", "cid:")


def _attribute_filter(tag: str, attr: str, value: str) -> str | None:
    if attr == "style" and _BAD_STYLE.search(value):
        return None
    if tag == "img" and attr == "src":
        return value if value.strip().lower().startswith(_SAFE_SRC) else None
    if attr == "href":
        v = value.strip().lower()
        return value if v.startswith(("http://", "https://", "mailto:", "#")) else None
    return value


def clean_html(html: str) -> str:
    """The mail's HTML with everything that can run, load or submit removed."""
    return nh3.clean(
        html,
        tags=_TAGS,
        clean_content_tags=_CONTENT_DROPPED,
        attributes=_ATTRS,
        attribute_filter=_attribute_filter,
        url_schemes={"http", "https", "mailto", "cid", "data"},
        strip_comments=True,
        link_rel="noopener noreferrer nofollow",
        filter_style_properties=_STYLE_PROPERTIES,
    )


def frame_document(body: str, lang: str = "") -> str:
    """The whole document the sandboxed frame shows."""
    return (
        f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8">'
        "<style>body{font-family:sans-serif;margin:8px;word-wrap:break-word}"
        "img{max-width:100%}</style></head><body>"
        f"{body}</body></html>"
    )
