"""Batch editing from Python: many images (or a saved inversion) edited with one editor, each
output written atomically with its recipe — what ``leditspp edit`` does, as values.

    from leditspp.batch import BatchEdit, edit_batch, plan_edits
    plan = plan_edits(BatchEdit(images=("photos/",), edits=("+snow:6",), output="edited/"))
    stats = edit_batch(plan)          # stats.done, stats.failed; edited/edit-log.csv

:mod:`.plan` checks everything that needs no model (one :class:`Job` per input), :mod:`.run`
computes the jobs here or on Ray (``plan_edits(batch, RayOptions())``), :mod:`.outputs` writes them.
"""

from .plan import BatchEdit, EditPlan, Job, plan_edits
from .run import edit_batch

__all__ = ["BatchEdit", "EditPlan", "Job", "edit_batch", "plan_edits"]
