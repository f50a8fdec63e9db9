from .gate_momentum_hook import GateMomentumHook, find_momentum_gates  # noqa: F401
from .distill_hook import SelfDistillationHook  # noqa: F401
from .schedule_hook import DynamicScheduleHook  # noqa: F401
from .random_state_hook import RandomStateHook  # noqa: F401
from .stats_hook import DynamicStatsHook  # noqa: F401
from .decision_map_hook import DecisionMapHook  # noqa: F401
