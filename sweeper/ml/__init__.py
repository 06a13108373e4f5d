"""Keras: the only code that trains or saves models. The datasets and their splits (`data`), the MLP a configuration
builds (`model`), one trial's training with early stopping and the final refit (`train`), the file formats a model
is written in and read back from (`formats`), and Keras imported without its backend's start-up lines (`quiet`)."""
