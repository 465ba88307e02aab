"""The Textual app: a thin shell over store, engine and personas.

Entry point for the CLI: `loom.tui.app.run_app(loom_path, *, prompt, model_path, readonly,
replay=False) -> int` (imported from there so that `import loom.tui` stays cheap).
"""
