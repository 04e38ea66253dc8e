"""The call path: the wrapper around every actor's function, the body step that runs where the body runs, the
message being processed, and option lookup. It sits above the payloads and below the middleware: it imports
nothing of ``dramatiq_ray.results``, ``dramatiq_ray.execution`` or the other middleware, which reach it through
:func:`~dramatiq_ray.callpath.wrapper.join`.
"""
