"""The runtime kernel: one module per component of the architecture document.

plan (ExecutionPlan) -> runner (_PipelineRunner, _RunStateMachine) -> orchestrator
(_Orchestrator) with kernel (_Kernel), scheduler (_Scheduler), barriers
(_BarrierManager), publisher (event publisher), failures (_FailureJournal),
context (_RunContext) and invoker (the seam where step functions are called).
The control channel and the metrics recorder live in `justpipe._core` (compiled).
"""
