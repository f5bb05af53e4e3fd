"""Below every layer: what all of them use and none of them owns. Building an object from a
config with one-line errors (:mod:`~vae_zoo.support.instantiation`), reading a checkpoint without
running code from it (:mod:`~vae_zoo.support.checkpoint_files`), naming the extra an optional
part needs (:mod:`~vae_zoo.support.extras`), and the private Lightning attributes vae_zoo reads,
in one place (:mod:`~vae_zoo.support.lightning_internals`). With :mod:`vae_zoo.errors`, the only
modules every layer may import."""
