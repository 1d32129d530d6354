"""Demo and test tools: the event generator, the traffic simulator (``segstream simulate``) and
the live view (``segstream watch``). Nothing in the worker or collector imports them."""
