"""`make bench`: gateway overhead, streams, memory and structured-output quality, side by side."""
