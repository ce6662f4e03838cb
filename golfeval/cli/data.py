"""`golfeval data ...`: build challenge-format shards from your own text."""

import click

from golfpack.cli.kit import emit_json


@click.group()
def data():
    """Build and check challenge-format token shards."""


@data.command("build")
@click.option("--tokenizer", "tokenizer_path", required=True, type=click.Path(dir_okay=False),
              help="sentencepiece .model file")
@click.option("--docs", required=True, type=click.Path(dir_okay=False),
              help='JSONL corpus, one {"text": ...} object per line')
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="output directory for fineweb_{val,train}_NNNNNN.bin")
@click.option("--val-docs", default=50_000, show_default=True,
              help="the first N documents go to validation shards")
@click.option("--shard-tokens", default=100_000_000, show_default=True,
              help="tokens per shard file")
@click.option("--workers", default=None, type=int, help="encoding threads (default: cores)")
@click.option("--force", is_flag=True, help="write into a non-empty output directory")
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def build_cmd(tokenizer_path, docs, out_dir, val_docs, shard_tokens, workers, force, as_json):
    """Tokenize a JSONL corpus into BOS-prefixed validation and training shards."""
    from golfeval.data.build import build

    s = build(tokenizer_path, docs, out_dir, val_docs=val_docs, shard_tokens=shard_tokens,
              force=force, workers=workers, progress=not as_json)
    if as_json:
        emit_json(s.to_dict())
        return
    click.echo(f"validation: {s.val_docs:,} docs, {s.val_tokens:,} tokens")
    click.echo(f"training:   {s.train_docs:,} docs, {s.train_tokens:,} tokens")
    click.echo(f"vocab {s.vocab_size}, tokenizer sha256 {s.tokenizer_sha256[:16]}...")
    for f in s.files:
        click.echo(f"  wrote {f}")
