"""The Textual app: a thin shell over the application layer (loom.app).

The CLI starts it with `loom.tui.launch.run_app` (imported only when a command opens the app, so
that `loom --help` and the other commands stay quick). Nothing else imports this package.
"""
