"""The top layer of the toolkit: what puts the codec (``codec``) and the language model (``lm``)
together for users. Today: the ``semanticodec`` command line (:mod:`semanticodec_lm.cli`), whose
subcommands are thin adapters over library functions. Nothing below (``codec``, ``lm``) imports it.
"""
