"""All RabbitMQ access, as ``store/`` is all MongoDB access: the one Dramatiq broker factory and enqueuer
(``broker.py``) and the events exchange (``bus.py``).

Both are adapters, one layer above ``models/`` beside ``store/``, not ``core/``: they speak the product's models
(a message is a ``JobDocument``'s id, an event an ``Event``), which ``core/`` may not import. They are below
``services/``, whose outbox (``dispatch.py``) and event publisher write MongoDB and RabbitMQ together, so that no
adapter imports the other.
"""
