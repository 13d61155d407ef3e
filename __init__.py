"""engineroom: a job system for AI-engine workloads."""

__version__ = "0.1.0"
