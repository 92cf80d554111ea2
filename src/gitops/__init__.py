"""Delivery tooling: move images between environments through git (`bump`, `promote`,
`rollback`, `status`), check the manifests they deploy (`validate`) and label the image
(`image-args`). `cli` parses and dispatches to one module per command (`commands`), which all
stand on a shared `core`. Runs on CI runners and laptops, never in the serving image; standard
library + PyYAML only."""
