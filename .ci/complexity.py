"""Fail if a function in mplog is more complex than 10, counted as radon does:
each branch, loop, `except`, comprehension and boolean operator adds one
(ruff's mccabe counts a whole `and`/`or` chain as nothing)."""

import pathlib
import sys

from radon.complexity import cc_visit
from radon.visitors import Class, Function

LIMIT = 10


def functions(blocks):
    """Every function, method and closure once (radon lists a class's methods
    both in the class and beside it)."""
    seen = set()
    stack = list(blocks)
    while stack:
        block = stack.pop()
        if isinstance(block, Class):
            stack.extend(block.methods)
        elif isinstance(block, Function) and (block.lineno, block.name) not in seen:
            seen.add((block.lineno, block.name))
            yield block
            stack.extend(block.closures)


too_complex = [
    f"{path}:{function.lineno} {function.fullname} {function.complexity}"
    for path in sorted(pathlib.Path("mplog").rglob("*.py"))
    for function in functions(cc_visit(path.read_text()))
    if function.complexity > LIMIT
]
print(*too_complex, sep="\n")
print(f"complexity: {len(too_complex)} functions over {LIMIT}")
sys.exit(1 if too_complex else 0)
