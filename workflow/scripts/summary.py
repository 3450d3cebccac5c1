"""Snakemake adapter: the Markdown results summary (also printed to the log)."""

from pathlib import Path

from splicer.logs import logged
from splicer.pipeline.tables import summarise

with logged(snakemake):  # noqa: F821 - injected by Snakemake
    sm = snakemake  # noqa: F821
    cards = getattr(sm.input, "scorecard", [])  # the scorecard is optional (a config without one)
    cards = [cards] if isinstance(cards, str) else list(cards)
    scorecard = cards[0] if cards else None
    text = summarise(
        sm.input.probes, sm.input.ceilings, bool(sm.config.get("demo", False)), scorecard, sm.params.datasets
    )
    Path(sm.output[0]).write_text(text)
    print(text)
