"""The demo report: Markdown sections, tables and figure links relative to the report."""
import pandas as pd

from attnlab.report import Section, write_report


def test_report_sections_tables_and_relative_figure_links(tmp_path):
    fig_dir = tmp_path / "globality"
    fig_dir.mkdir()
    (fig_dir / "mad.png").write_bytes(b"png")
    table = pd.DataFrame({"model": ["ViT", "ReViT"], "top1": [0.85061, 0.8511]})
    path = write_report(tmp_path / "report.md", "attnlab demo", "Intro text.",
                        [Section("Globality", "Text.", [(fig_dir / "mad.png", "MAD per layer")], table),
                         Section("Empty")])
    text = path.read_text()
    assert text.startswith("# attnlab demo\n\nIntro text.")
    assert "## Globality" in text and "## Empty" in text
    assert "![MAD per layer](globality/mad.png)" in text and "*MAD per layer*" in text
    assert "| model | top1 |" in text and "| ViT | 0.851 |" in text and "| ReViT | 0.851 |" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # atomic: no temporary left


def test_report_replaces_an_earlier_one(tmp_path):
    write_report(tmp_path / "report.md", "first", "", [])
    write_report(tmp_path / "report.md", "second", "", [])
    assert (tmp_path / "report.md").read_text().startswith("# second")
