"""MediaWiki dump (.xml / .xml.bz2) to BERT pre-training text: one sentence per line, a blank line per document.

The dump is cleaned by wikiextractor (the installed package, run in a subprocess) and each article's paragraphs
are cut into sentences by `split_sentences`, a small rule-based splitter for English and Chinese:

* Chinese: a sentence ends after a run of 。！？… (e.g. "？……"), plus any closing quotes or brackets that
  follow (”’」』）》); no whitespace is needed after it.
* English: a sentence ends after . ! ? (plus closing quotes/brackets) when whitespace and then an upper-case
  letter, a digit, an opening quote/bracket or a CJK character follow, unless the word before the full stop is
  a known abbreviation (Mr., Dr., e.g., U.S., Jan., ...) or a single capital letter (an initial: "J. R. R.").

It needs no model or download. It splits too rarely rather than too often (e.g. after "etc." before a capital
it keeps one sentence), which is the safer error for next-sentence prediction.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import tempfile
from typing import Iterable, Iterator, List, Optional, Sequence, TextIO, Tuple

from src.infra.files import atomic_output

logger = logging.getLogger(__name__)

_CLOSERS = "\"'”’」』）)》】]"
_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof st jr sr vs etc e.g i.e cf al no nos fig figs vol vols ed eds inc ltd co corp mt gen gov sen rep
col lt sgt capt cmdr adm rev hon pres u.s u.k u.n a.m p.m approx dept est jan feb mar apr jun jul aug sep sept oct
nov dec ca op ch pp art c
""".split())
# Hard Chinese terminators end a sentence wherever they are; closing quotes/brackets stay with the sentence.
_ZH_END = re.compile(r"(?:[。！？]|…)+[" + re.escape(_CLOSERS) + r"]*")
# Western terminators need evidence that a new sentence starts (whitespace + capital/digit/quote/CJK).
_EN_END = re.compile(r"[.!?]+[" + re.escape(_CLOSERS) + r"]*(?=\s+[\"'“‘(\[A-Z0-9\u4e00-\u9fff])")
_LAST_WORD = re.compile(r"([\w.]+)\.$")

# wikiextractor 3.0.6 (the last PyPI release) compiles two regexes with a "(?i)" in the middle, which Python
# 3.11+ rejects ("global flags not at the start of the expression"; fixed upstream in PR #313, never released).
# Both patterns only ever match case-insensitively-harmless text (a URL protocol, an image extension), so the
# wrapper retries such a pattern with the flag applied to the whole expression. On Python < 3.11 it is a no-op.
_WIKIEXTRACTOR_MAIN = """
import re, runpy, sys
_compile = re.compile
def _compat_compile(pattern, flags=0):
    try:
        return _compile(pattern, flags)
    except re.error as err:
        if isinstance(pattern, str) and '(?i)' in pattern and 'global flags' in str(err):
            return _compile(pattern.replace('(?i)', ''), flags | re.IGNORECASE)
        raise
re.compile = _compat_compile
sys.argv[0] = 'WikiExtractor'
runpy.run_module('wikiextractor.WikiExtractor', run_name='__main__', alter_sys=True)
"""


def _ends_with_abbreviation(text: str) -> bool:
    """Whether `text` (ending in a full stop) ends with an abbreviation or an initial, not a sentence end."""
    match = _LAST_WORD.search(text)
    if not match:
        return False
    word = match.group(1)
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _split_english(text: str) -> List[str]:
    """Split at Western terminators that are followed by a new sentence (see the module docstring)."""
    sentences, start = [], 0
    for match in _EN_END.finditer(text):
        end = match.end()
        if text[match.start()] == "." and match.group().rstrip(_CLOSERS) == "." \
                and _ends_with_abbreviation(text[start:match.start() + 1]):
            continue
        sentences.append(text[start:end].strip())
        start = end
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def split_sentences(paragraph: str) -> List[str]:
    """Split one paragraph into sentences with the English and Chinese rules of the module docstring."""
    sentences: List[str] = []
    start = 0
    for match in _ZH_END.finditer(paragraph):
        sentences.extend(_split_english(paragraph[start:match.end()]))
        start = match.end()
    sentences.extend(_split_english(paragraph[start:]))
    return sentences


def is_heading(paragraph: str) -> bool:
    """Whether a wikiextractor paragraph is a section heading ("History." / "詞源."), not prose.

    wikiextractor prints a heading as its text plus a full stop. Chinese prose ends in 。, so a short line ending
    in an ASCII "." with no other punctuation is a heading; for English, at most five words.
    """
    text = paragraph.strip()
    if not text.endswith(".") or len(text) > 60 or re.search(r"[.!?。！？，,;:；：]", text[:-1]):
        return False
    has_cjk = re.search(r"[\u4e00-\u9fff]", text) is not None
    return has_cjk or len(text.split()) <= 5


def article_sentences(text: str, drop_headings: bool = True) -> List[str]:
    """Sentences of one extracted article (paragraphs separated by newlines)."""
    sentences: List[str] = []
    for paragraph in text.split("\n"):
        paragraph = paragraph.strip()
        if not paragraph or (drop_headings and is_heading(paragraph)):
            continue
        sentences.extend(split_sentences(paragraph))
    return sentences


def wikiextractor_command(dump: str, processes: int = 1, templates: bool = True) -> List[str]:
    """The wikiextractor command line that writes one JSON article per line to stdout."""
    cmd = [sys.executable, "-c", _WIKIEXTRACTOR_MAIN, "--json", "-o", "-", "--processes", str(processes), "-q"]
    if not templates:
        cmd.append("--no-templates")
    return cmd + [dump]


def iter_extracted_articles(dump: str, processes: int = 1, templates: bool = True) -> Iterator[dict]:
    """Run wikiextractor on a dump and yield its JSON articles ({"id", "title", "text", ...}) as they come.

    Output goes through stdout because wikiextractor 3.0.6 writes its output folder from a forked process that
    never closes its file, so the last articles of a run can be lost; stdout is flushed when that process exits.

    Raises:
        FileNotFoundError: the dump does not exist.
        RuntimeError: wikiextractor failed (its last stderr lines are included) or printed a non-JSON line.
    """
    if not os.path.isfile(dump):
        raise FileNotFoundError(f"MediaWiki dump not found: {dump}")
    cmd = wikiextractor_command(dump, processes, templates)
    logger.info("running wikiextractor on %s", dump)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as stderr:
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=stderr, encoding="utf-8") as proc:
            for number, line in enumerate(proc.stdout, 1):
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    proc.kill()
                    raise RuntimeError(f"wikiextractor output line {number} for {dump} is not JSON ({err}): "
                                       f"{line[:200]!r}") from None
        if proc.returncode != 0:
            stderr.seek(0)
            tail = "".join(stderr.readlines()[-15:])
            raise RuntimeError(f"wikiextractor failed on {dump} (exit code {proc.returncode}):\n{tail}")


def write_documents(documents: Iterable[Sequence[str]], out: TextIO) -> Tuple[int, int]:
    """Write documents as one sentence per line with a blank line between them; returns (documents, sentences)."""
    n_docs = n_sentences = 0
    for sentences in documents:
        if not sentences:
            continue
        if n_docs:
            out.write("\n")
        out.write("".join(s + "\n" for s in sentences))
        n_docs += 1
        n_sentences += len(sentences)
    return n_docs, n_sentences


def wiki_to_text(dump: str, output: str, processes: int = 1, templates: bool = True, drop_headings: bool = True,
                 min_sentences: int = 1, progress: Optional[bool] = None) -> Tuple[int, int]:
    """Turn a MediaWiki dump into BERT pre-training text at `output`; returns (documents, sentences).

    Articles with fewer than `min_sentences` sentences (stubs, disambiguation leftovers) are skipped and counted
    in the log. The file is written under a temporary name and renamed at the end; a failed run removes it.
    """
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    skipped = 0

    def documents() -> Iterator[List[str]]:
        nonlocal skipped
        articles = tqdm(iter_extracted_articles(dump, processes, templates), unit=" articles",
                        disable=not progress if progress is not None else None)
        for article in articles:
            sentences = article_sentences(article.get("text", ""), drop_headings)
            if len(sentences) < min_sentences:
                skipped += 1
                continue
            yield sentences

    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with atomic_output(output) as out:  # a failed or interrupted run leaves no output at all
        counts = write_documents(documents(), out)
    logger.info("%s: %d documents, %d sentences (%d articles skipped, < %d sentences)",
                output, counts[0], counts[1], skipped, min_sentences)
    return counts
