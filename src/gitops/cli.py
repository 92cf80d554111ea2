"""The `gitops` command line: bump, promote, rollback, status, validate, image-args.

This module only parses arguments and dispatches to one module per command
(`gitops.commands.<command>`), each of which stands on `gitops.core` alone. Command modules are
imported when their command runs, so the parser itself needs only the standard library (see
`gitops.core.defaults`).

Exit codes: 0 done (or nothing to do), 1 the work failed part-way (restored where possible) or,
for `validate`, the manifests have findings, 2 invalid input or state, nothing changed. Progress
goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from gitops.core.defaults import (
    DEFAULT_ATTEMPTS,
    DEFAULT_IMAGE_NAME,
    DEFAULT_MODEL_CARD,
    DEFAULT_REMOTE,
)
from gitops.core.errors import EXIT_USAGE, GitopsError, UsageError
from gitops.core.git import Git

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from gitops.commands.bump import Build

R = TypeVar("R", bound="DataclassInstance")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gitops",
        description="Move the classifier image between environments through git commits, "
        "and check what they deploy.",
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

    v = sub.add_parser(
        "validate",
        help="render and validate the manifests offline (schemas, policies, scanners)",
        description="Render every overlay, argocd/ and cluster/ with the pinned kustomize, "
        "validate them offline against the Kubernetes, Argo CD and Kyverno JSON schemas "
        "(kubeconform -strict), run the "
        "project policies, checkov and kube-score, and compare staging with prod. Without "
        "--overlay/--argocd/--cluster/--compare: the whole repository. Exit 1 lists every finding.",
    )
    v.add_argument("--overlay", type=Path, action="append", help="kustomization dir (repeatable)")
    v.add_argument("--argocd", type=Path, help="the Argo CD kustomization (default: argocd/)")
    v.add_argument(
        "--cluster", type=Path, help="the admission policy kustomization (default: cluster/)"
    )
    v.add_argument("--compare", type=Path, nargs=2, metavar=("STAGING", "PROD"))
    v.add_argument(
        "--kubernetes-version",
        action="append",
        dest="versions",
        help="repeatable (default: every supported version)",
    )
    v.add_argument("--out", type=Path, help="where the rendered output goes (build/manifests)")
    v.add_argument("--no-scanners", action="store_true", help="skip checkov and kube-score")
    vsub = v.add_subparsers(dest="validate_command", metavar="schemas")
    vs = vsub.add_parser(
        "schemas",
        help="build the offline JSON schemas validate needs (cached by their pins)",
        description="Fetch the kubernetes-validate wheel (PyPI) and the Argo CD CRDs plus "
        "kubeconform's converter (Go module proxy), and write the schemas kubeconform reads.",
    )
    vs.add_argument("--out", dest="schemas_out", type=Path, help="default: .tools/schemas")
    vs.add_argument("--python", default="python3", help="an interpreter with pip (python3)")
    vs.add_argument("--go", default="go", help="the go command (go)")
    vs.add_argument("--argocd-version", required=True, help="the argo-cd module's version")
    vs.add_argument("--kubeconform-version", required=True, help="the kubeconform module's version")

    c = sub.add_parser(
        "promotion-check",
        help="(CI) the image a PR would deploy runs in staging, Synced and Healthy",
        description="The promotion PR's required check: read the image and digest the checked-"
        "out tree pins for --env, and ask Argo CD (ARGOCD_SERVER, ARGOCD_AUTH_TOKEN) whether the "
        "--from environment runs it, Synced and Healthy. Exit 0 ready, 1 not ready, 2 bad input.",
    )
    c.add_argument("--env", default="prod", help="the environment the PR changes")
    c.add_argument("--from", dest="source", default="staging", help="where it must run")
    c.add_argument("--application", help="Argo CD application (default elpv-classifier-FROM)")
    c.add_argument("--name", default=DEFAULT_IMAGE_NAME, help="the image name in `images:`")
    c.add_argument("--base", help="the PR's base revision: an unchanged image passes")

    i = sub.add_parser(
        "image-args",
        help="print the image's label build args (KEY=VALUE lines)",
        description="The Dockerfile's label build args from git and the model card, one "
        "KEY=VALUE per line (docker/build-push-action's build-args format).",
    )
    i.add_argument("--model-dir", type=Path, default=Path("models"))
    i.add_argument("--revision", help="source commit (default HEAD)")
    return parser


def _build_from_args(args: argparse.Namespace) -> Build:
    from gitops.commands.bump import Build

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


def _request(cls: type[R], args: argparse.Namespace, **given: object) -> R:
    """A command's request: the `given` fields, and every other field from the parsed option
    of the same name. A field with neither is a bug here, never a silent default."""
    values = {}
    for field in fields(cls):
        if field.name in given:
            values[field.name] = given[field.name]
        elif hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no option of that name is parsed")
    return cls(**values)


def _bump(args: argparse.Namespace, git: Git, root: Path) -> int:
    from gitops.commands.bump import BumpRequest, bump

    model_card = args.model_card or root / DEFAULT_MODEL_CARD
    request = _request(
        BumpRequest,
        args,
        build=_build_from_args(args),
        model_card=model_card,
        image_name=args.name,
        push=not args.no_push,
    )
    bump(git, root, request)
    return 0


def _promote(args: argparse.Namespace, git: Git, root: Path) -> int:
    from gitops.commands.promote import PromoteRequest, promote

    request = _request(
        PromoteRequest, args, source_env=args.source, target_env=args.target, image_name=args.name
    )
    promote(git, root, request)
    return 0


def _rollback(args: argparse.Namespace, git: Git, root: Path) -> int:
    from gitops.commands.rollback import RollbackRequest, rollback

    request = _request(
        RollbackRequest,
        args,
        to=args.to or None,  # an empty --to (a blank workflow input) means "the latest"
        image_name=args.name,
        push=not args.no_push,
    )
    rollback(git, root, request)
    return 0


def _status(args: argparse.Namespace, git: Git, root: Path) -> int:
    from gitops.commands.status import status

    status(git, root, args.env, args.json, args.name)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from gitops.commands.validate import (
        ROOT,
        SchemaSources,
        ValidateRequest,
        build_schemas,
        validate,
    )

    if args.validate_command == "schemas":
        build_schemas(
            args.schemas_out or ROOT / ".tools" / "schemas",
            SchemaSources(
                python=args.python,
                go=args.go,
                argocd_version=args.argocd_version,
                kubeconform_version=args.kubeconform_version,
            ),
        )
        return 0
    request = ValidateRequest(
        overlays=args.overlay or (),
        argocd=args.argocd,
        cluster=args.cluster,
        compare=(args.compare[0], args.compare[1]) if args.compare else None,
        versions=args.versions or (),
        scanners=not args.no_scanners,
    )
    if args.out is not None:
        request = replace(request, out=args.out)
    return validate(request)


def _image_args(args: argparse.Namespace) -> int:
    from gitops.commands.image_args import image_args

    image_args(args.model_dir, args.revision)
    return 0


def _promotion_check(args: argparse.Namespace, git: Git, root: Path) -> int:
    from gitops.commands.promotion_check import PromotionCheckRequest, promotion_check

    return promotion_check(_request(PromotionCheckRequest, args), root)


def run(args: argparse.Namespace) -> int:
    if args.command == "validate":
        return _validate(args)
    if args.command == "image-args":
        return _image_args(args)
    if not args.repo.is_dir():
        raise UsageError(f"--repo {args.repo} is not a directory")
    git = Git(args.repo.resolve())
    root = git.toplevel()
    command = {
        "bump": _bump,
        "promote": _promote,
        "rollback": _rollback,
        "status": _status,
        "promotion-check": _promotion_check,
    }
    return command[args.command](args, git, root)


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
