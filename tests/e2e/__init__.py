"""End-to-end GitOps scenarios against the local sandbox (make e2e)."""
