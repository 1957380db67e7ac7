"""`wapp doctor`: every check of the box, each finding with what to do about it."""
