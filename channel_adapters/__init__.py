"""Channel adapters, one module per channel, named by slug.

The registry is explicit (no folder scanning): ``kind -> "module:Class"``.
An adapter whose optional library is missing is disabled with one log line
by ``bridge.registry``, the rest keep working.
"""

REGISTRY: dict[str, str] = {
    "telegram": "channel_adapters.telegram:TelegramAdapter",
    "custom": "channel_adapters.custom:CustomAdapter",
    "email": "channel_adapters.email:EmailAdapter",
    "whatsapp": "channel_adapters.whatsapp:WhatsAppAdapter",
    "vk": "channel_adapters.vk:VkAdapter",
    "viber": "channel_adapters.viber:ViberAdapter",
    "max": "channel_adapters.max:MaxAdapter",
    "webchat": "channel_adapters.webchat:WebChatAdapter",
}
