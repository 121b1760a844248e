"""ecomgen: command line and launcher for the embedded Triton server."""
