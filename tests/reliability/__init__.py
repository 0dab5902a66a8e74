"""Reliability suite (issue 6): invariants under random faults, no deadlock, scale, soak and
compiled-vs-pure differential runs. What each file guarantees: docs/reliability.md."""
