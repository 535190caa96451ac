"""The only writers of evolution rows: runs, generations, candidates, and selection for production.

How a run moves (every step idempotent, so a crash anywhere is repaired by running it again):
1. `evolution_run_create` records the run and its first generation (candidates from NSGA-II's ask)
   in one transaction, then dispatches the generation: a Celery chord of one task per candidate.
2. `candidate_evaluate` claims a candidate with a compare-and-set (pending -> running, with a fresh
   claim token), trains and backtests it outside any transaction, and records the result only if
   it still holds the claim: a candidate's fitness is written once. A failure is recorded on the
   candidate and the generation goes on.
3. The chord's callback, `generation_advance`, completes the generation once every candidate is
   finished (tell: ranks, Pareto front, hypervolume), then `run_continue` asks for the next
   generation or completes the run.
4. `evolution_run_resume` (or the reaper) re-dispatches whatever is unfinished; duplicate messages
   find their candidate claimed or finished and do nothing.
"""

from __future__ import annotations

from evolution.services.evaluation import (
    METRIC_NAMES,
    EvaluationSettings,
    candidate_claim,
    candidate_evaluate,
    candidate_heartbeat,
    candidate_update_performance,
    claim_lease,
)
from evolution.services.operators import (
    POOR_SHARPE,
    crossover_strategies,
    mutate_strategy,
    propose_new_candidates,
)
from evolution.services.runs import (
    GENERATION_LIMITS,
    POPULATION_LIMITS,
    RunRequest,
    describe_changes,
    evolution_run_create,
    evolution_run_execute,
    evolution_run_resume,
    evolution_run_stop,
    generation_advance,
    generation_complete,
    generation_dispatch,
    run_continue,
    run_kick,
    run_space,
    stale_claims_release,
)
from evolution.services.selection import (
    candidate_select,
)
from evolution.services.upkeep import (
    STALL_AFTER,
    candidates_sync_lifecycle,
    evolution_runs_reap,
)

__all__ = [
    "GENERATION_LIMITS",
    "METRIC_NAMES",
    "POOR_SHARPE",
    "POPULATION_LIMITS",
    "STALL_AFTER",
    "EvaluationSettings",
    "RunRequest",
    "candidate_claim",
    "candidate_evaluate",
    "candidate_heartbeat",
    "candidate_select",
    "candidate_update_performance",
    "candidates_sync_lifecycle",
    "claim_lease",
    "crossover_strategies",
    "describe_changes",
    "evolution_run_create",
    "evolution_run_execute",
    "evolution_run_resume",
    "evolution_run_stop",
    "evolution_runs_reap",
    "generation_advance",
    "generation_complete",
    "generation_dispatch",
    "mutate_strategy",
    "propose_new_candidates",
    "run_continue",
    "run_kick",
    "run_space",
    "stale_claims_release",
]
