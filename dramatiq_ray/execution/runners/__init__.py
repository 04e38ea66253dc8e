"""How a message's body is run, each runner its own module behind one interface (:class:`..callpath.Runner`):
``ray_core`` (:mod:`.ray_task`) and ``ray_job`` (:mod:`.ray_job`); the local runner is the call path's own."""

#: The names of the Ray runners, as the middleware's ``runner`` and the ``RUNNER`` setting accept them.
RUNNERS = ("ray_core", "ray_job")
