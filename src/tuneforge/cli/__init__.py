"""Layer 6: the command line. Parses, calls one library function, renders."""
