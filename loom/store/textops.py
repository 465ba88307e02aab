"""How a node's tokens follow its text through edits, splits and merges (pure functions).

The invariant kept: a node's tokens are either *complete* (they are what the model reads for its
text) or *partial* (they read exactly a prefix of the text and the rest has no tokens yet). Partial
happens only without a tokenizer; with one, every uncovered piece of text is tokenized. Tokens
never get shifted or guessed, so the ids along a path are either exact or flagged.

- edit: the tokens lying wholly inside the prefix the old and new text share keep their ids and
  probabilities; the text after that is tokenized (or left partial). Tokenizing the changed tail
  separately may not match tokenizing the whole text at once; it is still a valid reading of it.
- split at a character: the text splits exactly there. Tokens wholly on one side stay on that
  side with their probabilities; a token straddling the point is replaced by tokenizing its two
  pieces (their probabilities become unknown), or, without a tokenizer, the straddling piece
  leaves the head partial and the tail with no tokens (partial).
- split at a token: exact, both sides keep every token.
- merge: concatenation (a partial head is completed first, or the result stays partial).
"""

from __future__ import annotations

from dataclasses import dataclass

from loom.store.errors import InvalidEditError
from loom.store.tokenizer import Tokenizer
from loom.tokens import TokenArray


@dataclass(frozen=True)
class Span:
    text: str
    tokens: TokenArray
    partial: bool = False  # tokens read only a prefix of text


def covered_ends(tokens: TokenArray, text: str) -> list[int]:
    """End offset in `text` of each leading token whose text continues `text` exactly."""
    ends: list[int] = []
    pos = 0
    for piece in tokens.texts:
        if not text.startswith(piece, pos):
            break
        pos += len(piece)
        ends.append(pos)
    return ends


def _fill(tokens: TokenArray, covered: int, text: str, tokenizer: Tokenizer | None) -> Span:
    """`tokens` read `text[:covered]`; tokenize the rest, or mark the span partial."""
    rest = text[covered:]
    if not rest:
        return Span(text, tokens, False)
    if tokenizer is None:
        return Span(text, tokens, True)
    return Span(text, TokenArray.concat([tokens, tokenizer.tokenize(rest)]), False)


def new_text(text: str, tokens: TokenArray | None, tokenizer: Tokenizer | None) -> Span:
    """A new node: given tokens are trusted; otherwise tokenize, or store none (partial)."""
    if tokens is not None:
        return Span(text, tokens, False)
    return _fill(TokenArray.empty(), 0, text, tokenizer)


def complete(span: Span, tokenizer: Tokenizer | None) -> Span:
    """The span with its uncovered text tokenized, if it is partial and a tokenizer is at hand."""
    if not span.partial:
        return span
    return _fill(span.tokens, len("".join(span.tokens.texts)), span.text, tokenizer)


def edit(old: Span, text: str, tokenizer: Tokenizer | None) -> Span:
    common = 0
    limit = min(len(old.text), len(text))
    while common < limit and old.text[common] == text[common]:
        common += 1
    ends = covered_ends(old.tokens, old.text)
    keep = sum(1 for end in ends if end <= common)
    covered = ends[keep - 1] if keep else 0
    return _fill(old.tokens.slice(0, keep), covered, text, tokenizer)


def split_at_char(span: Span, at: int, tokenizer: Tokenizer | None) -> tuple[Span, Span]:
    text = span.text
    if not 0 < at < len(text):
        raise InvalidEditError(
            f"cannot split at character {at}: it must be inside the text (1..{len(text) - 1})"
        )
    ends = covered_ends(span.tokens, text)
    mapped = len(ends)
    head_count = sum(1 for end in ends if end <= at)
    head = _fill(
        span.tokens.slice(0, head_count),
        ends[head_count - 1] if head_count else 0,
        text[:at],
        tokenizer,
    )
    tail_text = text[at:]
    if head_count == mapped:  # nothing mapped lies beyond the split point
        return head, _fill(TokenArray.empty(), 0, tail_text, tokenizer)
    start = ends[head_count - 1] if head_count else 0
    straddle = start < at
    first = head_count + 1 if straddle else head_count
    body = span.tokens.slice(first, mapped)
    if straddle:
        if tokenizer is None:
            return head, Span(tail_text, TokenArray.empty(), True)
        body = TokenArray.concat([tokenizer.tokenize(text[at : ends[head_count]]), body])
    return head, _fill(body, ends[mapped - 1] - at, tail_text, tokenizer)


def split_at_token(span: Span, index: int, tokenizer: Tokenizer | None) -> tuple[Span, Span]:
    ends = covered_ends(span.tokens, span.text)
    if not 0 < index <= len(ends):
        if index > len(ends) and len(ends) < len(span.tokens):
            raise InvalidEditError(
                "this node's token texts do not spell its text; split at a character instead"
            )
        raise InvalidEditError(
            f"cannot split at token {index}: it must be between 1 and {len(span.tokens) - 1}"
        )
    at = ends[index - 1]
    if at >= len(span.text):
        raise InvalidEditError(f"cannot split at token {index}: no text follows it")
    head = Span(span.text[:at], span.tokens.slice(0, index), False)
    body = span.tokens.slice(index, len(ends))
    return head, _fill(body, ends[-1] - at, span.text[at:], tokenizer)


def merge(head: Span, tail: Span, tokenizer: Tokenizer | None) -> Span:
    head = complete(head, tokenizer)
    text = head.text + tail.text
    if head.partial:
        return Span(text, head.tokens, True)
    tail = complete(tail, tokenizer)
    return Span(text, TokenArray.concat([head.tokens, tail.tokens]), tail.partial)
