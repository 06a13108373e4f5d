"""The use cases, free of click and rich, imported by the command line and callable from Python: the plan of a sweep
(`plan`: every setting resolved once), the sweep itself (`sweep`), the trial function every engine calls
(`runner`), the worker processes (`pool`), coarse-to-fine (`refine`), the model out (`export`, `predict`), the
learning-rate range test (`lr_find`), a study's page (`report`), looking at studies (`studies`), the stores'
check and repair (`doctor`) and the MLflow UI (`ui`)."""
