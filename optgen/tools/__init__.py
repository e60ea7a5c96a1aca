"""Views for people on compiled rules and models: graphs, summaries, certificate plots."""
