"""The peer model servers (KServe, LitServe, BentoML, MLServer) serving our model, each written
the way its own documentation shows, and the benchmark that runs them beside our service
(`make bench-peers`, bench/peers/__main__.py). Each runs in its own venv, .tools/peers/<name>."""
