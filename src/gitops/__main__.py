"""`python -m gitops ...`: the same entry point as the `gitops` console script."""

from gitops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
