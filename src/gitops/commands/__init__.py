"""One module (or package) per `gitops` command. Each imports only `gitops.core` (and the model
card), never another command: `gitops.cli` parses the arguments and calls one of them."""
