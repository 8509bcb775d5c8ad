"""The logged-model commands' decisions, and the legacy ``runs/log-model``'s.

The rules (model names, tag and param keys, final statuses, the MLmodel document) are the
logged-models module's, checked with the reference's texts as the work decides.
"""

from __future__ import annotations

from evtrack.domain import logged_model_commands as lc
from evtrack.domain import logged_models
from evtrack.domain._planning import decided_by, pairs

decided_by(
    {
        lc.CreateLoggedModel: lambda uow, c, _: logged_models.create_logged_model(
            uow,
            c.experiment_id,
            name=c.name,
            model_type=c.model_type,
            source_run_id=c.source_run_id,
            params=pairs(c.params),
            tags=pairs(c.tags),
        ),
        lc.FinalizeLoggedModel: lambda uow, c, _: logged_models.finalize_logged_model(
            uow, c.model_id, c.status
        ),
        lc.SetLoggedModelTags: lambda uow, c, _: logged_models.set_logged_model_tags(
            uow, c.model_id, pairs(c.tags)
        ),
        lc.DeleteLoggedModelTag: lambda uow, c, _: logged_models.delete_logged_model_tag(
            uow, c.model_id, c.key
        ),
        lc.LogLoggedModelParams: lambda uow, c, _: logged_models.log_logged_model_params(
            uow, c.model_id, pairs(c.params)
        ),
        lc.DeleteLoggedModel: lambda uow, c, _: logged_models.delete_logged_model(uow, c.model_id),
        lc.LogRunModel: lambda uow, c, _: logged_models.record_logged_model(
            uow, c.run_id, c.model_json
        ),
    }
)
