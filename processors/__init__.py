"""The pure core: apply events to customer state, evaluate segments, compute next due instants.

Never imports faust, redis, aiokafka or kafka: everything here is deterministic and I/O free.
"""
