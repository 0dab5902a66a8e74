"""How the built-in observers recognise the end of the run they are watching."""

from __future__ import annotations

from justpipe.types import Event, EventType, PipelineEndData, PipelineTerminalStatus

__all__ = ["root_end_status"]


def root_end_status(event: Event) -> PipelineTerminalStatus | None:
    """The terminal status carried by the run's own FINISH event, else ``None``.

    Forwarded sub-pipeline FINISH events (``parent_run_id`` set) are not the run's end.
    After a client close the kernel hands observers a FINISH whose status is
    ``CLIENT_CLOSED`` just before ``on_pipeline_end``; this is how they learn of it.
    """
    if event.type is not EventType.FINISH or event.parent_run_id is not None:
        return None
    payload = event.payload
    return payload.status if isinstance(payload, PipelineEndData) else None
