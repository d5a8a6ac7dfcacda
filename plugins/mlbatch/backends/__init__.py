"""Backends: the app DB, the warehouse, the object store and the job launchers.

Each boundary has a protocol and a registry from URL scheme or connection type to its class
(``appdb.backends.BACKENDS``, ``warehouse.WAREHOUSES``, ``store.FILESYSTEMS``,
``launchers.LAUNCHERS``); :mod:`mlbatch.backends.env` asks them which to build. Everything
above this layer gets its backends from an :class:`~mlbatch.backends.env.Environment`.
"""
