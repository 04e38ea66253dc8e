"""The class form of an actor on replicas: Dramatiq's ``GenericActor``, with ``setup()`` run once per replica.

Nothing here imports Ray: producers declare these actors too.
"""

from __future__ import annotations

from typing import Any

import dramatiq

from ..errors import ConfigurationError
from .replica_options import Replicas

__all__ = ["ReplicaActor"]


class ReplicaActor(dramatiq.GenericActor):
    """A class-based actor (Dramatiq's ``GenericActor``) whose body runs on warm replicas: each replica calls
    :meth:`setup` once, before its first message, then :meth:`perform` for every message, on the same object,
    so what ``setup`` keeps on ``self`` is there for every message, as Ray's callable classes do.

    ``Meta`` carries the actor's options as for any ``GenericActor``, and must set ``replicas`` (without its
    ``setup``, which is this class's method)::

        class Embed(dramatiq_ray.ReplicaActor):
            class Meta:
                store_results = True
                ray_options = {"num_gpus": 1}
                replicas = dramatiq_ray.Replicas(min=1, max=4)

            def setup(self):
                self.model = load_model()

            def perform(self, text):
                return self.model.encode(text)

    Declare it at module level in a module the replicas can import (as Ray imports any actor's code). Calling
    ``Embed(text)`` directly runs ``perform`` in the calling process, where ``setup`` has not run.

    Raises:
      ConfigurationError: at class creation, when ``Meta`` sets no ``replicas``, or a ``Replicas`` with its own
        ``setup``.
    """

    class Meta:
        abstract = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        meta = getattr(cls, "Meta", None)
        if meta is None or vars(meta).get("abstract", False):
            return
        replicas = vars(meta).get("replicas")
        if not isinstance(replicas, Replicas):
            raise ConfigurationError(
                f"ReplicaActor {cls.__name__} must set replicas = dramatiq_ray.Replicas(...) in its Meta class, "
                f"not {type(replicas).__name__}."
            )
        if replicas.setup is not None:
            raise ConfigurationError(
                f"ReplicaActor {cls.__name__} runs its own setup() on each replica: remove setup= from its "
                "Replicas(...), or declare a function actor with replicas=Replicas(setup=...)."
            )

    def setup(self) -> Any:
        """Called once on each replica, before it runs any message; keep what messages need on ``self``. What it
        returns is also :func:`~dramatiq_ray.replica_state`. Does nothing by default."""
        return None
