"""Write docs/tests.md, the catalogue of every scenario test, from the tests."""

from pathlib import Path

from harness import resources

if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "docs" / "tests.md"
    out.write_text(resources.catalogue())
    print(f"wrote {out}")
