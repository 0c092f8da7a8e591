"""Speed and quality benchmarks that print tables; not part of the installed package."""
