"""CRM adapters, one module (or package) per CRM, named by slug.

The registry is explicit (no folder scanning): ``kind -> "module:Class"``.
"""

REGISTRY: dict[str, str] = {
    "hubspot": "crm_adapters.hubspot:HubSpotAdapter",
    "amocrm": "crm_adapters.amocrm:AmoCrmAdapter",
    "bitrix24": "crm_adapters.bitrix24:Bitrix24Adapter",
}
