"""The admin's field-mapping config: schema, loader, and example files."""

from mappings.loader import MappingError, MappingStore, load_mapping, parse_mapping
from mappings.schema import ChannelRule, MappingConfig, OwnerRule, TaskRule

__all__ = [
    "ChannelRule",
    "MappingConfig",
    "MappingError",
    "MappingStore",
    "OwnerRule",
    "TaskRule",
    "load_mapping",
    "parse_mapping",
]
