"""`python -m toolrl.fidelity > docs/fidelity.md`: print the generated fidelity page."""

from toolrl.fidelity import render_markdown

if __name__ == "__main__":
    print(render_markdown(), end="")
