"""`golfeval data ...`: build challenge-format shards from your own text."""

import click

from golfpack.cli.kit import POSITIVE_INT, LazyGroup, emit_json


@click.group(cls=LazyGroup)  # LazyGroup: its errors are told with `build`'s flags
def data():
    """Build and check challenge-format token shards."""


@data.command("build")
@click.option("--tokenizer", "tokenizer_path", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model file")
@click.option("--docs", multiple=True, type=click.Path(dir_okay=False),
              help='JSONL corpus, one {"text": ...} object per line; repeatable: several '
                   "are read in the order given, as one stream of documents")
@click.option("--val", "val_corpora", multiple=True, type=click.Path(dir_okay=False),
              help="JSONL corpus held out whole for validation (repeatable); with --val, "
                   "--val-docs defaults to 0")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="output directory for fineweb_{val,train}_NNNNNN.bin")
@click.option("--val-docs", type=click.IntRange(min=0), default=None,
              help="the first N documents of the --docs stream also go to validation "
                   "[default: 50,000; 0 with --val]")
@click.option("--shard-tokens", type=POSITIVE_INT, default=100_000_000, show_default=True,
              help="tokens per shard file")
@click.option("--workers", default=None, type=POSITIVE_INT,
              help="encoding threads (default: this process's share of the idle cores, "
                   "at most 8)")
@click.option("--force", is_flag=True, help="write into a non-empty output directory")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def build_cmd(tokenizer_path, docs, val_corpora, out_dir, val_docs, shard_tokens, workers,
              force, as_json):
    """Tokenize JSONL corpora into BOS-prefixed validation and training shards.

    Validation: every document of the --val corpora, then the first --val-docs documents
    of the --docs corpora (in the order given); the rest is training.
    """
    from golfeval.data.build import build

    if not docs and not val_corpora:
        raise click.UsageError("give at least one corpus: --docs FILE (or --val FILE)")
    s = build(tokenizer_path, list(docs), out_dir, val=list(val_corpora), val_docs=val_docs,
              shard_tokens=shard_tokens, force=force, workers=workers, progress=not as_json)
    if as_json:
        emit_json(s.to_dict())
        return
    click.echo(f"validation: {s.val_docs:,} docs, {s.val_tokens:,} tokens")
    click.echo(f"training:   {s.train_docs:,} docs, {s.train_tokens:,} tokens")
    if len(s.corpora) > 1:
        for c in s.corpora:
            where = "validation" if c["split"] == "val" else "docs"
            click.echo(f"  {c['docs']:>9,} docs from {c['path']} ({where})")
    click.echo(f"vocab {s.vocab_size}, tokenizer sha256 {s.tokenizer_sha256[:16]}...")
    for f in s.files:
        click.echo(f"  wrote {f}")
