"""MediaWiki dump (.xml or .xml.bz2) -> BERT pre-training text (one sentence per line, blank line per document).

  python scripts/wiki_to_text.py --input zhwiki-latest-pages-articles.xml.bz2 --output data/zhwiki.txt

Runs wikiextractor (installed from requirements.txt) and the rule-based sentence splitter of src/data/wiki.py.
The result is the input of scripts/create_pretraining_data.py (--input_format sentences).
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.wiki import wiki_to_text  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="MediaWiki XML dump, plain (.xml) or bzip2 (.xml.bz2)")
    parser.add_argument("--output", required=True, help="text file to write")
    parser.add_argument("--processes", type=int, default=1, help="wikiextractor worker processes (default 1)")
    parser.add_argument("--no_templates", action="store_true",
                        help="do not expand templates (skips wikiextractor's first pass over the dump)")
    parser.add_argument("--keep_headings", action="store_true",
                        help="keep section headings (wikiextractor prints them as 'Title.') as sentences")
    parser.add_argument("--min_sentences", type=int, default=1,
                        help="skip articles with fewer sentences than this (default 1: only empty ones)")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.processes < 1 or args.min_sentences < 0:
        raise SystemExit(f"--processes must be >= 1 (got {args.processes}) and --min_sentences >= 0 "
                         f"(got {args.min_sentences})")
    docs, sentences = wiki_to_text(args.input, args.output, processes=args.processes,
                                   templates=not args.no_templates, drop_headings=not args.keep_headings,
                                   min_sentences=args.min_sentences)
    print(f"wrote {args.output}: {docs} documents, {sentences} sentences")


if __name__ == "__main__":
    main()
