"""What a search shows when it ends, read from its results; nothing here writes to the tracking
store: the printed summary (``summary``), the figures (``figures``), every trial side by side
(``trials_table``) and the MLflow UI's links (``links``)."""
