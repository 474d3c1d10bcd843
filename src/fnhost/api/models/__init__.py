"""The request bodies of the API, typed: one module per noun (``functions.py`` for
``/functions``, ``calls.py``, ``schedules.py``, …) and ``common.py`` for the shapes every
resource shares (identifiers, ``byids``, limits and cursors, time ranges).

The rule: a body is decoded here and only here. Each model is a ``WireModel`` (camelCase on
the wire, snake_case in Python, unknown keys ignored, strict types) and hands the services
the typed value they take (``FunctionWrite.spec()`` → ``services.functions.FunctionSpec``).
Types and shapes are checked by the model; rules that need settings or the database (limits,
runtimes, whether an external id is taken) stay in the service. Responses are encoded in the
router, one ``<noun>_out`` function per noun.
"""
