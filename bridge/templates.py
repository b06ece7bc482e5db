"""Render the mapping's field templates (``"{channel.title}: {contact.name}"``).

Placeholders are looked up in a flat dict; nothing is evaluated, so a
template can never reach attributes or call code. Unknown or empty values
render as empty strings (the schema already rejected unknown names).
"""

from __future__ import annotations

from collections.abc import Mapping

from mappings.schema import PLACEHOLDER_RE

__all__ = ["render", "render_all"]


def render(template: str, context: Mapping[str, str | None]) -> str:
    text = PLACEHOLDER_RE.sub(lambda m: str(context.get(m.group(1)) or ""), template)
    return " ".join(text.split()) if "\n" not in template else text.strip()


def render_all(templates: Mapping[str, str], context: Mapping[str, str | None]) -> dict[str, str]:
    """Render each template; drop properties that render empty (don't blank
    a CRM field because the channel didn't tell us a value)."""
    out = {}
    for name, template in templates.items():
        value = render(template, context)
        if value.strip(" :-"):
            out[name] = value
    return out
