"""The Ray Tune search: space parsing (``space``), the trial function (``trial``), the driver
(``driver``) and the command-line flags (``cli_args``)."""
