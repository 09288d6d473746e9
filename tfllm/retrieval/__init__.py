"""Knowledge bases: documents chunked into passages, embedded, searched; grounded prompts."""
