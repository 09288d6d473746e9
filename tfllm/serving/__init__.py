"""Serving exports: a development server with TF Serving's gRPC and REST APIs, and a client."""
