"""The application layer: what the CLI and the terminal app both do with a loom and a model.

`session` (one open loom, its model and the user's place), `navigation`, `generation`,
`multiverse`, `stats`, `regenerate`, `timeline` (replay without a screen, forking), `doctor`.
UI-free: nothing here imports textual or rich.
"""
