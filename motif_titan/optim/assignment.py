"""Which rank of a shard group runs Newton-Schulz for which matrix (Parallel Muon's step 1)."""

import heapq
from collections.abc import Sequence

from motif_titan.config_checks import refuse

ASSIGNMENTS = ("flops_round_robin", "lpt", "round_robin")


def check_assignment(assignment: str) -> None:
    if assignment not in ASSIGNMENTS:
        refuse("optimizer.assignment", assignment, list(ASSIGNMENTS))


def assign_owners(costs: Sequence[int], group_size: int, assignment: str) -> tuple[list[int], list[int]]:
    """(order, owners): the order in which matrices are processed (chunks follow it) and each matrix's owner.

    - "round_robin": model order, owner = position % group_size.
    - "flops_round_robin" (the report's): sorted by Newton-Schulz cost, largest first, dealt round-robin.
    - "lpt": sorted the same way, each matrix to the currently least-loaded rank (longest processing time first).
    """
    indices = list(range(len(costs)))
    if assignment == "round_robin":
        return indices, [i % group_size for i in indices]
    order = sorted(indices, key=lambda i: (-costs[i], i))
    owners = [0] * len(costs)
    if assignment == "flops_round_robin":
        for position, i in enumerate(order):
            owners[i] = position % group_size
        return order, owners
    loads = [(0, rank) for rank in range(group_size)]
    for i in order:
        load, rank = heapq.heappop(loads)
        owners[i] = rank
        heapq.heappush(loads, (load + costs[i], rank))
    return order, owners
