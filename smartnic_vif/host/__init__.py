"""Host backends: the only modules with side effects."""
