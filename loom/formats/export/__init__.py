"""Writers for reading and showing a loom elsewhere: Markdown, Graphviz DOT, SVG and HTML.

Export only: loom-json, Open Loom and socketteer (both ways) are in loom.formats.
"""
