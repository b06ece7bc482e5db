"""Turning stored rows back into the normalised model."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from bridge.model import Attachment, MessageKind, SenderProfile

__all__ = ["attachment_from_dict", "aware", "profile_from_payload"]


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands datetimes back naive: they were stored as UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def attachment_from_dict(data: Mapping[str, Any]) -> Attachment:
    fields = {k: v for k, v in data.items() if k in Attachment.__dataclass_fields__}
    fields["kind"] = MessageKind(fields.get("kind", "document"))
    return Attachment(**fields)


def profile_from_payload(payload: Mapping[str, Any] | None) -> SenderProfile:
    data = dict((payload or {}).get("profile") or {})
    data["utm"] = dict(data.get("utm") or {})
    data["consent"] = dict(data.get("consent") or {})
    return SenderProfile(
        **{k: v for k, v in data.items() if k in SenderProfile.__dataclass_fields__}
    )
