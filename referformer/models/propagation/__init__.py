"""The learned mask propagator: a space-time-memory network (STM / STCN / XMem family).

:class:`SpaceTimeMemoryNet` (``model.py``) with its encoders (``encoders.py``), the attention read and
the soft aggregation of objects (``memory.py``), and its typed configuration and presets
(``config.py``). The streaming runner over long videos lives in
:mod:`referformer.inference.propagation_memory`; training in :mod:`referformer.engine.propagation_training`.
"""

from referformer.models.propagation.config import PROPAGATOR_PRESETS, PropagatorConfig, propagator_preset
from referformer.models.propagation.memory import aggregate_logits, probability_logits, read_memory
from referformer.models.propagation.model import EncodedFrame, SpaceTimeMemoryNet, build_propagator

__all__ = ["PROPAGATOR_PRESETS", "EncodedFrame", "PropagatorConfig", "SpaceTimeMemoryNet", "aggregate_logits",
           "build_propagator", "probability_logits", "propagator_preset", "read_memory"]
