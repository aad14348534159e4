"""Per training pair, the Delta of its last training visit (train.final_pass=last_visit).

Every optimizer step's per-pair Delta (StepResult.pairs: on every TP/PP rank of a DP rank after
the pipeline broadcast) is gathered over the data-parallel group and written at the pair's index
in the training split, so every rank holds the same table. Delta is the policy's at that visit
(the forward of the step, before its optimizer update). The table goes into the checkpoint's
common state: a resumed run ends with the table of the uninterrupted run.
"""

import torch
import torch.distributed as dist


class LastVisits:
    """delta[i]: Delta of training pair i at its last visit; visited[i]: has it had one."""

    def __init__(self, num_pairs: int):
        self.delta = torch.zeros(num_pairs, dtype=torch.float64)
        self.visited = torch.zeros(num_pairs, dtype=torch.bool)

    def record(self, pairs: dict, group=None) -> None:
        """Collective over `group` (the data-parallel group; None: this process alone): every DP
        rank's `pairs` ({pair_index, delta}: StepResult.pairs) of one step."""
        local = {"pair_index": pairs["pair_index"].long(), "delta": pairs["delta"].double()}
        gathered = [local]
        if group is not None and dist.get_world_size(group) > 1:
            gathered = [None] * dist.get_world_size(group)
            dist.all_gather_object(gathered, local, group=group)
        for part in gathered:   # a pair repeated within a step has one Delta: the order is moot
            self.delta[part["pair_index"]] = part["delta"]
            self.visited[part["pair_index"]] = True

    def state_dict(self) -> dict:
        return {"delta": self.delta.clone(), "visited": self.visited.clone()}

    def load_state_dict(self, state: dict) -> None:
        if state["delta"].shape != self.delta.shape:
            raise ValueError(f"last-visit deltas were saved for {state['delta'].numel()} training pairs "
                             f"but this run has {self.delta.numel()}; the data changed")
        self.delta = state["delta"].to(torch.float64).clone()
        self.visited = state["visited"].to(torch.bool).clone()
