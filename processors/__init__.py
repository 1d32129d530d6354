"""The pure core: apply events to customer state, evaluate segments, compute next due instants.

Never imports faust, redis, aiokafka or kafka: everything here is deterministic and I/O free.
The modules on the per-event path are compiled with mypyc by ``make install``;
``processors.native`` decides (once, here) whether the compiled ones or the .py sources load.
"""

from processors import native as _native

_native.install()
