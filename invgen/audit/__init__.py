"""`invgen audit`: a reproducible bias audit of a pipeline on a prompt suite (sample, detect faces, classify,
report). See docs/audit.md."""

from invgen.lazy import lazy_exports

# Lazy, so that `import invgen.audit.suites` (and the CLI's start-up) loads nothing heavy.
__all__, __getattr__ = lazy_exports(__name__, {"run_audit": "invgen.audit.run", "AuditRequest": "invgen.audit.plan",
                                               "compare_audits": "invgen.audit.compare"})
