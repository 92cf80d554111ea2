"""The `gitops` command line: bump, promote, rollback, status.

Exit codes: 0 done (or nothing to do), 1 the work failed part-way (restored where possible),
2 invalid input or state, nothing changed. Progress goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gitops.bump import Build, BumpRequest, bump
from gitops.errors import EXIT_USAGE, GitopsError, UsageError
from gitops.gitrepo import Git
from gitops.overlay import DEFAULT_IMAGE_NAME
from gitops.promote import PromoteRequest, promote
from gitops.publish import DEFAULT_ATTEMPTS, DEFAULT_REMOTE
from gitops.rollback import RollbackRequest, rollback
from gitops.status import status

DEFAULT_MODEL_CARD = Path("models/model_card.json")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitops",
        description="Move the classifier image between environments through git commits.",
    )
    parser.add_argument(
        "--repo", type=Path, default=Path("."), help="the deployment repository (default: .)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--name",
            default=DEFAULT_IMAGE_NAME,
            help=f"the image name in the overlays' `images:` (default {DEFAULT_IMAGE_NAME})",
        )
        p.add_argument("--remote", default=DEFAULT_REMOTE, help="the remote to push to")

    b = sub.add_parser(
        "bump",
        help="deploy a build to an environment (one commit, pushed)",
        description="Set an overlay's image to a build (kustomize edit set image), copy its "
        "model card, commit with trailers and push (retrying when the remote moved).",
    )
    b.add_argument("--env", required=True, help="environment = overlays/<env>")
    b.add_argument("--image", help="image name without tag, e.g. ghcr.io/org/elpv-classifier")
    b.add_argument("--tag", help="image tag (the full git SHA of the source commit)")
    b.add_argument("--digest", help="image digest, sha256:<64 hex>")
    b.add_argument(
        "--from-build", type=Path, help="read image, tag and digest from build/image.json"
    )
    b.add_argument(
        "--model-card",
        type=Path,
        help=f"the build's model card (default: {DEFAULT_MODEL_CARD} in the repository)",
    )
    b.add_argument("--source-revision", help="the commit the image was built from (default: tag)")
    b.add_argument("--force", action="store_true", help="allow moving to an older build")
    b.add_argument("--no-push", action="store_true", help="commit locally only")
    b.add_argument("--attempts", type=_positive, default=DEFAULT_ATTEMPTS, help="push attempts")
    common(b)

    p = sub.add_parser(
        "promote",
        help="prepare the PR that runs one environment's build in another",
        description="Commit the source environment's image and model card to the target "
        "overlay on a branch, and write the PR title and body (metric deltas, changelog).",
    )
    p.add_argument("--from", dest="source", required=True, help="environment to copy from")
    p.add_argument("--to", dest="target", required=True, help="environment to copy to")
    p.add_argument("--branch", help="branch name (default promote/<from>-to-<to>)")
    p.add_argument("--body-file", type=Path, help="write the PR body here (default: stdout)")
    p.add_argument("--push", action="store_true", help="force-push the branch to the remote")
    p.add_argument("--open-pr", action="store_true", help="open or update the PR with `gh`")
    p.add_argument("--force", action="store_true", help="allow promoting an older build")
    common(p)

    r = sub.add_parser(
        "rollback",
        help="revert an environment's latest deploy (or back to a given one)",
        description="Revert deploy commits found by their trailers. Reviewed environments "
        "(prod) get a branch and a PR; others are pushed directly.",
    )
    r.add_argument("--env", required=True, help="environment = overlays/<env>")
    r.add_argument("--to", help="deploy commit, source revision or digest to return to")
    mode = r.add_mutually_exclusive_group()
    mode.add_argument(
        "--pr",
        dest="via_pr",
        action="store_true",
        default=None,
        help="make a branch + PR (default for prod)",
    )
    mode.add_argument(
        "--direct",
        dest="via_pr",
        action="store_false",
        help="commit to the current branch (default for other environments)",
    )
    r.add_argument("--no-push", action="store_true", help="do not push anything")
    r.add_argument("--open-pr", action="store_true", help="open or update the PR with `gh`")
    r.add_argument("--body-file", type=Path, help="write the PR body here (PR mode)")
    r.add_argument("--attempts", type=_positive, default=DEFAULT_ATTEMPTS, help="push attempts")
    common(r)

    s = sub.add_parser("status", help="what each environment runs")
    s.add_argument("--env", action="append", help="only this environment (repeatable)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--name", default=DEFAULT_IMAGE_NAME, help="the image name in `images:`")
    return parser


def _build_from_args(args: argparse.Namespace) -> Build:
    given = [f"--{k}" for k in ("image", "tag", "digest") if getattr(args, k)]
    if args.from_build is not None:
        if given:
            raise UsageError(f"--from-build and {', '.join(given)} exclude each other")
        return Build.from_file(args.from_build)
    missing = [f"--{k}" for k in ("image", "tag", "digest") if not getattr(args, k)]
    if missing:
        raise UsageError(
            f"missing {', '.join(missing)}",
            "pass --image, --tag and --digest, or --from-build build/image.json",
        )
    return Build(image=args.image, tag=args.tag, digest=args.digest)


def run(args: argparse.Namespace) -> int:
    if not args.repo.is_dir():
        raise UsageError(f"--repo {args.repo} is not a directory")
    git = Git(args.repo.resolve())
    root = git.toplevel()
    if args.command == "bump":
        request = BumpRequest(
            env=args.env,
            build=_build_from_args(args),
            model_card=args.model_card or root / DEFAULT_MODEL_CARD,
            source_revision=args.source_revision,
            image_name=args.name,
            force=args.force,
            push=not args.no_push,
            remote=args.remote,
            attempts=args.attempts,
        )
        bump(git, root, request)
    elif args.command == "promote":
        promote(
            git,
            root,
            PromoteRequest(
                source_env=args.source,
                target_env=args.target,
                branch=args.branch,
                body_file=args.body_file,
                push=args.push,
                open_pr=args.open_pr,
                remote=args.remote,
                image_name=args.name,
                force=args.force,
            ),
        )
    elif args.command == "rollback":
        rollback(
            git,
            root,
            RollbackRequest(
                env=args.env,
                to=args.to or None,  # an empty --to (a blank workflow input) means "the latest"
                via_pr=args.via_pr,
                push=not args.no_push,
                open_pr=args.open_pr,
                body_file=args.body_file,
                remote=args.remote,
                image_name=args.name,
                attempts=args.attempts,
            ),
        )
    else:
        status(git, root, args.env, args.json, args.name)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args)
    except GitopsError as exc:
        print(f"gitops {args.command}: {exc.render()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"gitops {args.command}: interrupted", file=sys.stderr)
        return EXIT_USAGE + 128
