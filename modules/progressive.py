"""Progressive knowledge transfer's schedule (AutoDistill §3.3.3, after MobileBERT), held as data.

Stage k (k = 1..K) trains block k with blocks 1..k−1 frozen; a final pre-training-distillation stage trains
everything for the remaining steps. The stage is a pure function of the global step, so a resumed run
re-enters the right stage by construction. The Lightning callback that applies a stage is
``callbacks.progressive.ProgressiveTransfer``; the distillation module reads the schedule for its LR and
losses, so the schedule lives here, below both.
"""

from __future__ import annotations

from dataclasses import dataclass

PRETRAINING = "pretraining"


@dataclass(frozen=True)
class Stage:
    """Global steps [start, end) train ``block`` (0-based) or, for the pre-training stage, everything (None)."""

    name: str
    start: int
    end: int
    block: int | None

    @property
    def steps(self) -> int:
        return self.end - self.start


def progressive_schedule(num_blocks: int, total_steps: int, progressive_ratio: float) -> list[Stage]:
    """Split ``total_steps`` into K block stages and one pre-training stage.

    ``progressive_ratio`` is progressive steps : pre-training steps (the paper's 0.48: 12k : 25k in
    flash, 240k : 500k in regular). Block stages get equal shares; rounding leftovers go to pre-training.

    Raises:
        ValueError: fewer steps than blocks (a block stage would have no step).
    """
    progressive = round(total_steps * progressive_ratio / (1.0 + progressive_ratio))
    per_block = progressive // num_blocks if num_blocks else 0
    if progressive_ratio > 0 and per_block == 0:
        raise ValueError(
            f"{total_steps} steps at progressive_ratio={progressive_ratio} leave {progressive} progressive steps "
            f"for {num_blocks} blocks; raise the step budget or lower recipe.progressive_ratio"
        )
    stages = [
        Stage(f"block_{k + 1}", k * per_block, (k + 1) * per_block, k) for k in range(num_blocks) if per_block
    ]
    start = stages[-1].end if stages else 0
    if total_steps - start <= 0:
        raise ValueError(
            f"no steps left for pre-training distillation out of {total_steps}; lower progressive_ratio"
        )
    stages.append(Stage(PRETRAINING, start, total_steps, None))
    return stages


def stage_at(schedule: list[Stage], step: int) -> Stage:
    """The stage that global step ``step`` belongs to (steps past the end stay in the last stage)."""
    for stage in schedule:
        if step < stage.end:
            return stage
    return schedule[-1]
