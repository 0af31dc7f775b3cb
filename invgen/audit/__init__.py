"""`invgen audit`: a reproducible bias audit of a pipeline on a prompt suite (sample, detect faces, classify,
report). See docs/audit.md."""


def __getattr__(name: str):
    # Lazy, so that `import invgen.audit.suites` (and the CLI's start-up) loads nothing heavy.
    if name == "run_audit":
        from invgen.audit.run import run_audit

        return run_audit
    if name == "AuditRequest":
        from invgen.audit.plan import AuditRequest

        return AuditRequest
    if name == "compare_audits":
        from invgen.audit.compare import compare_audits

        return compare_audits
    raise AttributeError(f"module 'invgen.audit' has no attribute '{name}'")


__all__ = ["AuditRequest", "compare_audits", "run_audit"]
