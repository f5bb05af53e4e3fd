"""A console a person reads: Lightning's messages we know to be wrong or irrelevant for vae_zoo,
silenced narrowly (each by its message and where it comes from, never a whole category).

| message | why it does not apply |
|---|---|
| "`isinstance(treespec, LeafSpec)` is deprecated" (lightning.pytorch.utilities._pytree) | Lightning's own use of a torch API; nothing a user can change |
| "Tip: ... try installing litlogger" | an advertisement, printed at every trainer start |
| "The '...dataloader' does not have many workers" | our batches are slices of tensors in memory: workers would only add copies |
| "It is recommended to use `self.log('val/...', ..., sync_dist=True)`" | vae_zoo's epoch means are exact sums over examples, reduced across ranks once per epoch before they are logged (:class:`vae_zoo.stats.ExampleMeans`) |
"""

from __future__ import annotations

import logging
import warnings

_KNOWN_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
    (r"The '\w+' does not have many workers", r"lightning\.pytorch\..*"),
    (r"It is recommended to use `self\.log\('(val|test)/", r"lightning\.pytorch\..*"),
)


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(fragment in str(record.msg) for fragment in self.fragments)


def quiet_known_noise() -> None:
    """Install the filters (idempotent: the warnings module and the logger keep one copy each)."""
    for message, module in _KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropMessages) for f in rank_zero.filters):
        rank_zero.addFilter(_DropMessages("try installing [litlogger]"))
