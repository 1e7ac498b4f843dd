"""What a search is: the space (``space``), the trial function (``trial``), the Tuner built or
restored (``tuner``) with searchers and schedulers that resume exactly (``resumable``), a stop
by signal or a full storage (``interrupt``), the results read back (``results``) and the driver
that runs the phases in order (``driver``)."""
