"""The machinery every vendor sandbox shares, as moto's ``core`` serves every
fake AWS service; a vendor package keeps only its API's behaviour (paths,
payloads, error bodies, the parameters of its limits).

* :mod:`.control` -- the control API's one shape (``/_state``, ``/_config``,
  ``/_reset``, ``/_clock``; CRMs ``/_reply``; channels ``/_deliver``,
  ``/_sent``) over a :class:`~.control.Vendor` each sandbox subclasses
* :mod:`.faults` -- fault injection (errors, 429 storms, timeouts, refusals)
* :mod:`.stats` -- ``GET /_stats``: the vendor requests received
* :mod:`.config` -- defaults, start-up overrides, run-time updates
* :mod:`.clock` -- the one seam for time, movable from tests
* :mod:`.oauth` -- the authorization-code server: codes, tokens, rotation
* :mod:`.webhooks` -- outbound webhooks: sending, retry policies, dispatch,
  the delivery record
* :mod:`.ratelimit` -- rolling windows and token (leaky) buckets

Used by :mod:`sandbox.hubspot`, :mod:`sandbox.amocrm`, :mod:`sandbox.bitrix24`
and :mod:`sandbox.telegram`; ``sandbox/README.md`` describes the control API
for people.
"""
