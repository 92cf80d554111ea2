"""What every gitops command stands on: errors and exit codes (`errors`), git (`git`), the
overlays and their image lines edited through kustomize (`overlay`), model cards (`cards`), the
deploy history kept in commit trailers (`deploys`), and committing and publishing to a shared
branch with retries (`publish`). Nothing here imports a command (`gitops.commands`)."""
