"""MediaWiki dump -> one sentence per line: wikiextractor on a small dump the test writes, and the splitter."""
import bz2
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from src.data import pretrain_data
from src.data.wiki import is_heading, split_sentences, wiki_to_text

# Real dumps put each XML element on its own line; wikiextractor's line-based reader relies on that.
_PAGE = """  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{id}</id>
    <revision>
      <id>{rev}</id>
      <text xml:space="preserve">{text}</text>
    </revision>
  </page>
"""
_PAGES = [
    ("Anarchism", 0, "'''Anarchism''' is a [[political philosophy]] and [[Social movement|movement]]. It is "
     "sceptical of authority.&lt;ref&gt;A citation.&lt;/ref&gt; Dr. Smith wrote about it in 1990.\n\n"
     "== History ==\nThe earliest anarchist themes date to the 6th century BC! Was it older? Nobody can say "
     "for sure.\n{{Infobox ideology|name=x}}\n[[Category:Political ideologies]]"),
    ("数学", 0, "'''数学'''是研究[[数量]]、结构的学科。它起源于古代！数学有用吗？是的。\n\n== 词源 ==\n"
     "西方语言中“数学”一词源自古希腊语。"),
    ("Template:Infobox ideology", 10, "infobox"),
]


def _write_dump(path: str, compress: bool) -> str:
    pages = "".join(_PAGE.format(title=t, ns=ns, id=10 + i, rev=100 + i, text=text)
                    for i, (t, ns, text) in enumerate(_PAGES))
    xml = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="en">\n'
           "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>testwiki</dbname>\n"
           "    <base>https://en.wikipedia.org/wiki/Main_Page</base>\n    <case>first-letter</case>\n"
           '    <namespaces>\n      <namespace key="0" case="first-letter" />\n'
           '      <namespace key="10" case="first-letter">Template</namespace>\n    </namespaces>\n'
           f"  </siteinfo>\n{pages}</mediawiki>\n").encode("utf-8")
    if compress:
        path += ".bz2"
        xml = bz2.compress(xml)
    with open(path, "wb") as f:
        f.write(xml)
    return path


EXPECTED = ("Anarchism is a political philosophy and movement.\nIt is sceptical of authority.\n"
            "Dr. Smith wrote about it in 1990.\nThe earliest anarchist themes date to the 6th century BC!\n"
            "Was it older?\nNobody can say for sure.\n\n"
            "数学是研究数量、结构的学科。\n它起源于古代！\n数学有用吗？\n是的。\n西方语言中“数学”一词源自古希腊语。\n")


@pytest.mark.parametrize("compress", [False, True], ids=["xml", "xml.bz2"])
def test_dump_to_sentences(tmp_path, compress):
    dump = _write_dump(str(tmp_path / "dump.xml"), compress)
    out = str(tmp_path / "wiki.txt")
    assert wiki_to_text(dump, out, progress=False) == (2, 11)
    with open(out, encoding="utf-8") as f:
        assert f.read() == EXPECTED  # markup, refs, templates, categories and headings are gone
    assert not os.path.exists(out + ".partial")
    docs = pretrain_data.read_documents([out], "sentences")
    assert [len(d) for d in docs] == [6, 5]


def test_cli(tmp_path):
    dump = _write_dump(str(tmp_path / "dump.xml"), True)
    out = tmp_path / "wiki.txt"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "wiki_to_text.py"), "--input", dump, "--output", str(out),
           "--keep_headings"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == f"wrote {out}: 2 documents, 13 sentences"
    assert "History.\n" in out.read_text(encoding="utf-8")


def test_missing_and_broken_dumps(tmp_path):
    with pytest.raises(FileNotFoundError, match="MediaWiki dump not found: .*nope.xml"):
        wiki_to_text(str(tmp_path / "nope.xml"), str(tmp_path / "out.txt"))
    broken = tmp_path / "broken.xml.bz2"
    broken.write_bytes(b"this is not bzip2")
    with pytest.raises(RuntimeError, match=r"wikiextractor failed on .*broken.xml.bz2 \(exit code"):
        wiki_to_text(str(broken), str(tmp_path / "out.txt"))
    assert not os.path.exists(tmp_path / "out.txt")
    assert not os.path.exists(tmp_path / "out.txt.partial")  # no half-written leftover either


@pytest.mark.parametrize("text, expected", [
    ("Mr. Brown met J. R. R. Tolkien in the U.S. in 1950. They talked.",
     ["Mr. Brown met J. R. R. Tolkien in the U.S. in 1950.", "They talked."]),
    ('He said "Stop." Then he left. Pi is 3.14 and e is 2.72!', ['He said "Stop."', "Then he left.",
                                                                  "Pi is 3.14 and e is 2.72!"]),
    ("It costs 5 dollars, e.g. a lot. Why? (Nobody knows.) 2019 was next.",
     ["It costs 5 dollars, e.g. a lot.", "Why?", "(Nobody knows.)", "2019 was next."]),
    ("released in 2010 . It sold well .", ["released in 2010 .", "It sold well ."]),  # WikiText spacing
    ("他说：“好。”然后走了！真的吗？……是的", ["他说：“好。”", "然后走了！", "真的吗？……", "是的"]),
    ("BERT 是一个模型。It works. 很好。", ["BERT 是一个模型。", "It works.", "很好。"]),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_heading_rule():
    assert is_heading("History.") and is_heading("詞源.") and is_heading("See also.")
    assert not is_heading("数学是一门学科。") and not is_heading("It rained, then it stopped.")
