"""Every user action of loom: its binding id, default keys, description and help group.

One table feeds the key bindings, the command palette and the F1 help, so the three never
disagree. Users rebind by id in the config's [keymap] table (applied with App.set_keymap).
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class LoomAction:
    id: str  # the binding id users name in [keymap]
    keys: str  # default keys, comma-separated (Textual key names)
    action: str  # the Textual action string
    title: str  # short, for the footer and the palette
    help: str  # one line for the palette and F1
    group: str
    show: bool = False  # shown in the footer
    priority: bool = False


GENERATE = "Generate"
NAVIGATE = "Navigate"
EDIT = "Edit the tree"
MARK = "Mark and find"
VIEW = "View"
PERSONAS = "Personas"
CENSUS = "Census and guided growth"
APP = "App"
TOKENS = "Token cursor (reading pane)"

APP_ACTIONS: tuple[LoomAction, ...] = (
    # generation
    LoomAction("loom.generate", "g", "generate", "Generate",
               "Generate N children of the current node (streamed live)", GENERATE, show=True),
    LoomAction("loom.generate_siblings", "G", "generate_siblings", "Siblings",
               "Generate N siblings of the current node", GENERATE),
    LoomAction("loom.multiverse", "m", "multiverse", "Multiverse",
               "Block multiverse: the likeliest next tokens, a few steps deep", GENERATE,
               show=True),
    LoomAction("loom.cancel", "escape", "cancel", "Cancel",
               "Cancel the generation (partial tokens are kept) or leave the token cursor",
               GENERATE),
    LoomAction("loom.sampler", "c", "sampler", "Sampler",
               "Sampler settings and named presets", GENERATE),
    LoomAction("loom.generate_second", "W", "generate_second", "Generate with 2nd model",
               "Generate N children with the second model (M loads one)", GENERATE),
    LoomAction("loom.swap_models", "I", "swap_models", "Swap models",
               "Swap the primary and the second model (g and labels use the primary)",
               GENERATE),
    # navigation
    LoomAction("loom.parent", "left,h", "parent", "Parent", "Go to the parent", NAVIGATE),
    LoomAction("loom.child", "right,l", "child", "Child",
               "Go to a child (the one last visited, else the first)", NAVIGATE),
    LoomAction("loom.prev_sibling", "up,k", "sibling(-1)", "Previous sibling",
               "Go to the previous sibling", NAVIGATE),
    LoomAction("loom.next_sibling", "down,j", "sibling(1)", "Next sibling",
               "Go to the next sibling", NAVIGATE),
    LoomAction("loom.prev_leaf", "left_square_bracket", "leaf(-1)", "Previous leaf",
               "Go to the previous leaf (depth-first)", NAVIGATE),
    LoomAction("loom.next_leaf", "right_square_bracket", "leaf(1)", "Next leaf",
               "Go to the next leaf (depth-first)", NAVIGATE),
    LoomAction("loom.root", "home", "go_root", "Root", "Go to the root", NAVIGATE),
    LoomAction("loom.next_bookmark", "n", "bookmark_jump(1)", "Next bookmark",
               "Jump to the next bookmark", NAVIGATE),
    LoomAction("loom.prev_bookmark", "N", "bookmark_jump(-1)", "Previous bookmark",
               "Jump to the previous bookmark", NAVIGATE),
    LoomAction("loom.hoist", "z", "hoist", "Hoist",
               "Hoist: show the current node's subtree as the whole tree", NAVIGATE),
    LoomAction("loom.unhoist", "Z", "unhoist", "Unhoist",
               "Unhoist one level (the palette's Unhoist all goes back to the root)", NAVIGATE),
    LoomAction("loom.next_unread", "U", "next_unread", "Next unread",
               "Jump to the next node never shown in the reading pane", NAVIGATE),
    LoomAction("loom.search", "slash", "search", "Search",
               "Search the loom's text and jump to a result", NAVIGATE, show=True),
    # edits
    LoomAction("loom.write", "w", "write_child", "Write",
               "Write a human child of the current node", EDIT, show=True),
    LoomAction("loom.edit", "e", "edit_node", "Edit",
               "Edit the current node's text (tokens follow via the tokenizer)", EDIT),
    LoomAction("loom.split", "X", "split", "Split",
               "Split the node at the token cursor (the tail becomes a child)", EDIT),
    LoomAction("loom.merge", "J", "merge", "Merge",
               "Merge the current node into its parent", EDIT),
    LoomAction("loom.prune", "d", "prune", "Prune",
               "Prune the current branch (hidden, never deleted)", EDIT),
    LoomAction("loom.unprune", "D", "unprune", "Unprune", "Unprune the current branch", EDIT),
    LoomAction("loom.memory", "Y", "memory", "Memory",
               "Memory: hidden context the model reads (this node's or the loom's)", EDIT),
    LoomAction("loom.undo", "u,ctrl+z", "undo", "Undo", "Undo the last change", EDIT),
    LoomAction("loom.redo", "ctrl+r,ctrl+y", "redo", "Redo", "Redo the last undone change",
               EDIT),
    # marks
    LoomAction("loom.bookmark", "b", "bookmark", "Bookmark",
               "Bookmark the current node (again: remove)", MARK),
    LoomAction("loom.tag", "t", "tag", "Tag",
               "Add a tag to the current node (-name removes it)", MARK),
    # view
    LoomAction("loom.inspect", "i", "inspect", "Inspect",
               "Token cursor: inspect each token's probability and alternatives", VIEW,
               show=True),
    LoomAction("loom.stats", "s", "stats", "Stats",
               "Branch statistics of the current node", VIEW),
    LoomAction("loom.sort", "o", "cycle_sort", "Sort",
               "Sort siblings: created / mean logprob / cumulative logprob / mean entropy", VIEW),
    LoomAction("loom.child_filter", "K", "child_filter", "Filter children",
               "Filter children by mean or cumulative logprob or entropy (empty clears)", VIEW),
    LoomAction("loom.blind", "B", "toggle_blind", "Blind reading",
               "Blind reading: hide probabilities, models and personas; shuffle siblings",
               VIEW),
    LoomAction("loom.score", "S", "score", "Score",
               "Score hand-written and imported text (path and subtree) with the model",
               VIEW),
    LoomAction("loom.shading", "v", "toggle_shading", "Shading",
               "Shade tokens by probability on/off", VIEW),
    LoomAction("loom.show_pruned", "P", "toggle_pruned", "Show pruned",
               "Show or hide pruned branches", VIEW),
    LoomAction("loom.theme", "T", "pick_theme", "Theme", "Switch the colour theme", VIEW),
    # personas
    LoomAction("loom.persona_panel", "p", "persona_panel", "Persona panel",
               "Persona panel: posteriors, their path trajectory, evidence (again: hide)",
               PERSONAS),
    LoomAction("loom.label_personas", "r", "label_personas", "Label with personas",
               "Label the node's subtree or siblings with the loom's personas",
               PERSONAS),
    LoomAction("loom.manual_persona", "a", "manual_persona", "Hand label",
               "Set or clear a hand persona label on this node (it always wins)",
               PERSONAS),
    LoomAction("loom.persona_filter", "f", "persona_filter", "Persona filter",
               "Tree: show only or hide branches voicing a persona, or clear it",
               PERSONAS),
    LoomAction("loom.prune_persona", "x", "prune_persona", "Prune by persona",
               "Prune the siblings voicing a persona (one undo restores them all)", PERSONAS),
    LoomAction("loom.load_personas", "ctrl+l", "load_personas", "Load personas",
               "Load a persona set file (TOML) into the loom", PERSONAS),
    # census and growth
    LoomAction("loom.census", "C", "census", "Census",
               "Census: how often each persona comes next from this node (R rollouts, kept)",
               CENSUS),
    LoomAction("loom.fork_map", "F", "fork_map", "Fork map",
               "Fork map of the path: mark the tokens where the persona outcome forks",
               CENSUS),
    LoomAction("loom.transitions", "O", "transitions", "Transitions",
               "Persona transition table of this subtree: after A, how often B?", CENSUS),
    LoomAction("loom.grow", "A", "grow", "Grow",
               "Guided growth: explore, hunt a persona or fork, under a budget (esc stops)",
               CENSUS),
    # app
    LoomAction("loom.export", "E", "export", "Export",
               "Export the loom, a subtree or a path (every format), with progress", APP),
    LoomAction("loom.import", "ctrl+o", "import", "Import",
               "Import a file (loom-json, Open Loom, socketteer, loomsidian) into a new loom",
               APP),
    LoomAction("loom.model", "M", "switch_model", "Model",
               "Switch the model, or load (or drop) a second one beside it", APP),
    LoomAction("loom.help", "f1", "help", "Help", "Show every key (this screen)", APP,
               show=True),
    LoomAction("loom.palette", "ctrl+p", "command_palette", "Palette",
               "Open the command palette", APP, priority=True),
    LoomAction("loom.quit", "q", "quit", "Quit", "Quit loom", APP, show=True),
)  # fmt: skip

# Keys of the reading pane while it has focus (the token cursor); they shadow the tree keys.
TOKEN_ACTIONS: tuple[LoomAction, ...] = (
    LoomAction("tokens.prev", "left,h", "move(-1)", "Previous token",
               "Move the token cursor one token left", TOKENS),
    LoomAction("tokens.next", "right,l", "move(1)", "Next token",
               "Move the token cursor one token right", TOKENS),
    LoomAction("tokens.up", "up,k", "line(-1)", "Line up", "Move the token cursor up a line",
               TOKENS),
    LoomAction("tokens.down", "down,j", "line(1)", "Line down",
               "Move the token cursor down a line", TOKENS),
    LoomAction("tokens.node_start", "home", "node_edge(-1)", "Node start",
               "Token cursor to the first token of its node", TOKENS),
    LoomAction("tokens.node_end", "end", "node_edge(1)", "Node end",
               "Token cursor to the last token of its node", TOKENS),
    LoomAction("tokens.lowest", "L", "lowest", "Least likely",
               "Token cursor to the least likely token of the current node", TOKENS),
    LoomAction("tokens.census", "C", "census_here", "Census here",
               "Census at this token: what each alternative token leads to", TOKENS),
    LoomAction("tokens.branch", "enter", "branch", "Branch here",
               "Pick an alternative for this token and branch from it", TOKENS, show=True),
    *(
        LoomAction(f"tokens.alt{n}", str(n), f"branch_alternative({n})", f"Alternative {n}",
                   f"Branch with alternative #{n} at the token cursor", TOKENS)
        for n in range(1, 10)
    ),
)  # fmt: skip


def bindings(actions: tuple[LoomAction, ...]) -> list[Binding]:
    return [
        Binding(
            a.keys,
            a.action,
            a.title,
            show=a.show,
            id=a.id,
            priority=a.priority,
            tooltip=a.help,
        )
        for a in actions
    ]


ALL_ACTIONS = {a.id: a for a in (*APP_ACTIONS, *TOKEN_ACTIONS)}
