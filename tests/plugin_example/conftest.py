"""The example user project of tests/test_plugin.py (and README's "Test your own service"): the
plugin tests copy it, with receiver_app's verifier, into a temporary directory and run it
there; collected here it would lack that copy."""

collect_ignore = ["test_orders.py"]
