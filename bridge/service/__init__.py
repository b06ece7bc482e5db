"""The service layer: working hours, sessions, menus, routing and lines,
SLA clocks, CSAT and suggested replies, configured per tenant in the
mapping's ``service:`` section. Channel- and CRM-agnostic: what a channel
or a CRM can show is asked of its adapter."""
