"""Customer-state model and the stores behind small Protocols (in-memory and Redis).

``state.model`` and ``state.codec`` are compiled with mypyc with the pure core: install the
finder that picks compiled or pure-Python modules before either can be imported.
"""

from processors import native as _native

_native.install()
