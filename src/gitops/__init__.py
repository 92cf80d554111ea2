"""Delivery tooling: move images between environments through git (`bump`, `promote`,
`rollback`, `status`). Runs on CI runners and laptops, never in the serving image; standard
library + PyYAML only."""
