"""The scheduled mixer: which domain gives item t of a stream.

The choice for item t is a pure function of (seed, stream, t, w(t)) -- plus, inside a capped phase, how many of
the phase's items the capped group already got: ``u = counter_uniform(seed, stream, t)`` picks the domain whose
cumulative weight interval holds u. Nothing is drawn ahead, so weights may change at every item and the mixer's
state is just its counters: a mixer restored from ``state_dict`` continues exactly. (torchdata's
MultiNodeWeightedSampler has fixed weights, rejects 0 and draws ahead, which breaks exact resume under a schedule.)
"""

from collections.abc import Sequence

from .curriculum import CurriculumSchedule

_MASK64 = (1 << 64) - 1


def _splitmix64(z: int) -> int:
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def counter_uniform(seed: int, stream: int, counter: int) -> float:
    """A uniform number in [0, 1) that depends only on its three integer arguments (splitmix64 hashing)."""
    z = _splitmix64(_splitmix64(_splitmix64(seed & _MASK64) ^ (stream & _MASK64)) ^ (counter & _MASK64))
    return (z >> 11) / float(1 << 53)


def pick(u: float, weights: Sequence[float]) -> int:
    """The index whose interval of the cumulative (unnormalized) weights holds u * total; zero weights are never
    picked."""
    total = sum(weights)
    threshold = u * total
    cumulative = 0.0
    last = 0
    for i, w in enumerate(weights):
        if w <= 0:
            continue
        cumulative += w
        last = i
        if threshold < cumulative:
            return i
    return last  # rounding at u -> 1


class ScheduledMixer:
    """Draws the domain of each item of one stream (a DP rank, or a dataloader worker of it)."""

    def __init__(self, schedule: CurriculumSchedule, seed: int, stream: int) -> None:
        self.schedule = schedule
        self.seed = seed
        self.stream = stream
        self.items = 0
        self.domain_items = [0] * len(schedule.domain_names)
        self.cap_phase = -1
        self.cap_phase_items = 0
        self.cap_group_items = 0

    def draw(self, t: float) -> int:
        """The domain of the next item, with the schedule read at t (step or tokens)."""
        weights = list(self.schedule.weights(t))
        cap = self.schedule.cap_at(t)
        if cap is not None:
            phase, domain_cap = cap
            if phase != self.cap_phase:
                self.cap_phase, self.cap_phase_items, self.cap_group_items = phase, 0, 0
            # Never let the realized share of the group in this phase go above max_share.
            if self.cap_group_items + 1 > domain_cap.max_share * (self.cap_phase_items + 1):
                for i in domain_cap.domains:
                    weights[i] = 0.0
        domain = pick(counter_uniform(self.seed, self.stream, self.items), weights)
        if cap is not None:
            self.cap_phase_items += 1
            self.cap_group_items += domain in cap[1].domains
        self.items += 1
        self.domain_items[domain] += 1
        return domain

    def state_dict(self) -> dict:
        return {"items": self.items, "domain_items": list(self.domain_items), "cap_phase": self.cap_phase,
                "cap_phase_items": self.cap_phase_items, "cap_group_items": self.cap_group_items}

    def load_state_dict(self, state: dict) -> None:
        if len(state["domain_items"]) != len(self.domain_items):
            raise ValueError(f"mixer state for {len(state['domain_items'])} domains, this curriculum has "
                             f"{len(self.domain_items)}")
        self.items = state["items"]
        self.domain_items = list(state["domain_items"])
        self.cap_phase = state["cap_phase"]
        self.cap_phase_items = state["cap_phase_items"]
        self.cap_group_items = state["cap_group_items"]
